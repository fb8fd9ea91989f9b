"""open_clip models from local checkpoints (the optional ``open_clip`` extra; imported only when used).

open_clip imports torchvision; :func:`finexl.compat.import_torchvision` makes the CUDA build of PyPI's torchvision
importable beside a CPU torch (see ``finexl/compat.py``, the one place for that fix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from finexl.compat import import_torchvision
from finexl.errors import BackendError, ConfigError, InputError, MissingInputError
from finexl.explanation.embedder import Embedder
from finexl.loading import fingerprint_folder

# open_clip's defaults where a model does not carry its own normalization (open_clip.constants)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _import_open_clip():

    try:
        import_torchvision()
        import open_clip
    except ImportError as err:
        raise BackendError(
            "open_clip is not installed; it is an optional extra: pip install -e '.[open-clip]' (see finexl/compat.py)"
        ) from err
    return open_clip


class OpenCLIP(Embedder):
    """An open_clip model: ``model`` is a model name (``ViT-B-32``) or a model config JSON file; ``checkpoint``
    a local weights file (``.bin``, ``.pt`` or ``.safetensors``), never a download."""

    def __init__(self, model: str, checkpoint: str | Path, device: str = "cpu", batch_size: int = 256):

        open_clip = _import_open_clip()
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise MissingInputError(f"open_clip checkpoint {checkpoint} does not exist")
        name = model
        if model.endswith(".json"):
            config = Path(model)
            if not config.is_file():
                raise MissingInputError(f"open_clip model config {config} does not exist")
            open_clip.add_model_config(config)
            name = config.stem
        elif model not in open_clip.list_models():
            raise ConfigError(f"unknown open_clip model {model!r}; give a known name or a model config JSON file")
        self.device = torch.device(device)
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                name, pretrained=str(checkpoint), device=self.device
            )
        except (RuntimeError, ValueError, KeyError) as err:
            raise InputError(f"could not load open_clip {name} from {checkpoint}: {err}") from err
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.batch_size = batch_size
        self.name = f"open_clip:{name}"
        self.fingerprint = fingerprint_folder(checkpoint)

    @torch.no_grad()
    def _images(self, images: np.ndarray) -> torch.Tensor:

        pixels = torch.stack([self.preprocess(Image.fromarray(im)) for im in images]).to(self.device)
        return self.model.encode_image(pixels).cpu()

    def pixel_features(self, pixels: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        visual = self.model.visual
        size = visual.image_size if isinstance(visual.image_size, (tuple, list)) else (visual.image_size,) * 2
        x = F.interpolate(
            pixels.to(self.device, torch.float32),
            size=tuple(size),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )
        mean = torch.tensor(getattr(visual, "image_mean", None) or OPENAI_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(getattr(visual, "image_std", None) or OPENAI_STD, device=x.device).view(1, 3, 1, 1)
        return self.model.encode_image((x - mean) / std)

    @torch.no_grad()
    def _texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).cpu()
