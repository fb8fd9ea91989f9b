"""open_clip models from local checkpoints (the optional ``open_clip`` extra; imported only when used).

open_clip imports torchvision; :func:`finexl.compat.import_torchvision` makes the CUDA build of PyPI's torchvision
importable beside a CPU torch (see ``finexl/compat.py``, the one place for that fix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from finexl.errors import BackendError, ConfigError, InputError, MissingInputError
from finexl.explanation.embed import Embedder


def _import_open_clip():
    from finexl.compat import import_torchvision

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
        from finexl.loading import fingerprint_folder

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
        from PIL import Image

        pixels = torch.stack([self.preprocess(Image.fromarray(im)) for im in images]).to(self.device)
        return self.model.encode_image(pixels).cpu()

    @torch.no_grad()
    def _texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).cpu()
