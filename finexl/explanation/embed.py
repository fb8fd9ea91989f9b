"""Image and text embeddings from CLIP models loaded from local files.

Two backends behind one interface, :class:`Embedder`: a transformers ``CLIPModel`` folder (the toy CLIP by default;
any ``openai/clip-vit-*`` folder saved with ``save_pretrained``) and open_clip models by name or config file with a
local checkpoint (the optional extra, in :mod:`finexl.explanation.open_clip_backend`, imported only when asked for).
Embeddings are computed in batches without gradients and L2-normalized; they are returned as float64 numpy arrays.

A CLIP spec names the model: ``toy`` (the shipped toy CLIP), a transformers folder path, or
``open_clip:MODEL:CHECKPOINT`` where MODEL is an open_clip model name (``ViT-B-32``) or a model config JSON file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from finexl.errors import ConfigError, InputError, MissingInputError
from finexl.explanation.embedder import Embedder
from finexl.explanation.open_clip_backend import OpenCLIP
from finexl.loading import fingerprint_folder
from finexl.utils import data_dir

logger = logging.getLogger(__name__)

OPEN_CLIP_PREFIX = "open_clip:"


def _features(output) -> torch.Tensor:
    """transformers 4 returns a tensor from ``get_*_features``; transformers 5 an output with ``pooler_output``."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def _image_processor(path: Path):
    try:  # transformers >= 5: the PIL-based processor needs no torchvision
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    if (path / "preprocessor_config.json").is_file():
        return Processor.from_pretrained(path)
    logger.warning("%s has no preprocessor_config.json; using CLIP's default preprocessing", path)
    return Processor()


class TransformersCLIP(Embedder):
    """A transformers ``CLIPModel`` with its tokenizer and image processor, from a local folder."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 256):
        from transformers import CLIPModel, CLIPTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise MissingInputError(f"no CLIP model at {path}: expected a transformers folder with config.json")
        try:
            self.model = CLIPModel.from_pretrained(path).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(path)
        except OSError as err:
            raise MissingInputError(f"could not load the CLIP model in {path}: {err}") from err
        except Exception as err:  # damaged weights raise several types
            raise InputError(f"could not load the CLIP model in {path}: {err}") from err
        self.processor = _image_processor(path)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.batch_size = batch_size
        self.name = f"transformers:{path.name}"
        self.fingerprint = fingerprint_folder(path)
        self.text_window = int(self.tokenizer.model_max_length)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)

    @torch.no_grad()
    def _images(self, images: np.ndarray) -> torch.Tensor:
        pixels = self.processor(images=list(images), return_tensors="pt").pixel_values.to(self.device)
        return _features(self.model.get_image_features(pixel_values=pixels)).cpu()

    def pixel_features(self, pixels: torch.Tensor) -> torch.Tensor:
        p = self.processor
        x = pixels.to(self.device, torch.float32)
        if getattr(p, "do_resize", False):
            short = p.size.get("shortest_edge") if isinstance(p.size, dict) else p.size
            h, w = x.shape[-2:]
            if short and min(h, w) != short:
                scale = short / min(h, w)
                x = F.interpolate(
                    x, size=(round(h * scale), round(w * scale)), mode="bicubic", align_corners=False, antialias=True
                )
        if getattr(p, "do_center_crop", False):
            ch, cw = p.crop_size["height"], p.crop_size["width"]
            top, left = max(0, (x.shape[-2] - ch) // 2), max(0, (x.shape[-1] - cw) // 2)
            x = x[..., top : top + ch, left : left + cw]
        if getattr(p, "do_normalize", True):
            mean = torch.tensor(p.image_mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(p.image_std, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return _features(self.model.get_image_features(pixel_values=x))

    @torch.no_grad()
    def _texts(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        out = self.model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        return _features(out).cpu()


def parse_clip_spec(spec: str) -> tuple[str, ...]:
    """``("transformers", folder)`` or ``("open_clip", model, checkpoint)``, with the paths checked (no model is
    loaded), so a wrong spec stops a run before any image is made."""

    if spec == "toy":
        return ("transformers", str(data_dir() / "toy_clip"))
    if spec.startswith(OPEN_CLIP_PREFIX):
        parts = spec[len(OPEN_CLIP_PREFIX) :].split(":", 1)
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"open_clip spec {spec!r} must be open_clip:MODEL:CHECKPOINT")
        if not Path(parts[1]).is_file():
            raise MissingInputError(f"open_clip checkpoint {parts[1]} does not exist")
        return ("open_clip", parts[0], parts[1])
    if not (Path(spec) / "config.json").is_file():
        raise MissingInputError(
            f"no CLIP model at {spec}: expected a transformers folder with config.json, 'toy', or "
            "open_clip:MODEL:CHECKPOINT"
        )
    return ("transformers", spec)


def load_embedder(spec: str, device: str = "cpu") -> Embedder:
    """The embedder a CLIP spec names (see the module docstring), on ``device``."""
    parsed = parse_clip_spec(spec)
    if parsed[0] == "open_clip":
        return OpenCLIP(parsed[1], parsed[2], device=device)
    return TransformersCLIP(parsed[1], device=device)
