"""Diffusers pipelines from local folders: device, dtype, the denoiser, the native image size.

Nothing here reaches a model hub.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from finexl.errors import InputError, MissingInputError
from finexl.logs import honour_hub_progress_switch
from finexl.utils import data_dir

logger = logging.getLogger(__name__)

TOY_BASE = "toy_sd"  # the toy world's base pipeline, in the data folder: the default of every --base

DTYPES = ("float32", "float16", "bfloat16")


def torch_dtype(name: str):
    """The torch dtype called ``name`` (one of ``DTYPES``)."""
    import torch

    if name not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def check_device(device: str) -> str:
    """``device`` if torch knows it and it is present here; raises a one-line error otherwise."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"unknown device {device!r}: {err}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but this torch sees no CUDA device")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} asked for, but MPS is not available")
    return device


def load_pipeline(path: str | Path | None = None, device: str = "cpu", dtype: str = "float32", compile: bool = False):
    """A diffusers text-to-image pipeline from a local folder, moved to ``device`` in ``dtype``.

    ``path`` defaults to the toy world's base (``TOY_BASE`` in the data folder). ``compile``: the denoiser runs
    through ``torch.compile`` (compiled at its first call; weights changed in place later, as a fused LoRA's are,
    need no new compile).
    """
    from diffusers import DiffusionPipeline

    path = Path(path) if path is not None else data_dir() / TOY_BASE
    if not (path / "model_index.json").is_file():
        raise MissingInputError(f"no diffusers pipeline at {path}: model_index.json is missing")
    index = read_model_index(path)
    extra = {}
    if (index.get("safety_checker") or [None])[0] is not None:
        # a hub-style SD folder: its checker would black out some images, which would then enter the statistics,
        # and it costs ~300 M parameters and seconds per image; finexl samples without it
        logger.info("%s: the safety checker is not loaded (finexl samples without it)", path)
        extra = {"safety_checker": None, "requires_safety_checker": False}
    try:
        with warnings.catch_warnings():  # newer diffusers rename torch_dtype to dtype; older know only this
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            honour_hub_progress_switch()
            pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=torch_dtype(dtype), **extra)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise InputError(f"could not load the diffusers pipeline in {path}: {err}") from err
    pipe.to(check_device(device))
    pipe.set_progress_bar_config(disable=True)
    if compile:
        logger.info("%s: the denoiser is compiled at its first batch (slow once; see docs/speed.md)", path)
        # frozen as a loaded LoRA leaves it (peft freezes the base), so one graph serves the base and any LoRA
        denoiser(pipe).requires_grad_(False).compile(dynamic=False)
    return pipe


def denoiser(pipe):
    """The network a sampler step runs and training trains: the UNet, or a Flux pipeline's transformer."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else pipe.transformer


def read_model_index(path: str | Path) -> dict:
    """A pipeline folder's ``model_index.json`` (a JSON object), or a one-line error naming it."""
    path = Path(path)

    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path / 'model_index.json'} is not valid JSON: {err}") from err
    if not isinstance(index, dict):
        raise InputError(f"{path / 'model_index.json'} is not a JSON object")
    return index


# Transformer pipelines (Flux) keep their default latent size in the pipeline class, not in a config
TRANSFORMER_SAMPLE_SIZE = 128


def native_size(path: str | Path) -> int:
    """The image size a pipeline folder generates by default: the UNet's sample size (a transformer pipeline's,
    Flux's 128, has none in its config) times the VAE's downsampling."""
    path = Path(path)
    try:
        if (path / "unet" / "config.json").is_file() or not (path / "transformer" / "config.json").is_file():
            sample = json.loads((path / "unet" / "config.json").read_text())["sample_size"]
        else:
            sample = TRANSFORMER_SAMPLE_SIZE
        blocks = json.loads((path / "vae" / "config.json").read_text())["block_out_channels"]
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read the UNet (or transformer) and VAE configs of {path}: {err}") from err
    sample = sample[0] if isinstance(sample, list) else sample
    return int(sample) * 2 ** (len(blocks) - 1)
