"""Train a personalization from folders: the calls behind ``finexl train lora`` and ``finexl train dreambooth``."""

from __future__ import annotations

import logging
import shutil
from dataclasses import fields
from pathlib import Path

from finexl.errors import ConfigError, InputError
from finexl.loading import fingerprint_folder, load_pipeline
from finexl.loading.pipelines import read_model_index
from finexl.presets import toy_base
from finexl.train.data import load_image_folder
from finexl.train.dreambooth import ensure_class_images
from finexl.train.trainer import TrainConfig, TrainResult, native_resolution, train

logger = logging.getLogger(__name__)


def _config(config: TrainConfig | None, settings: dict, **fixed) -> TrainConfig:
    if config is not None and settings:
        raise ConfigError("give either config= or settings as keywords, not both")
    if config is not None:
        return config
    unknown = sorted(set(settings) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ConfigError(f"unknown training setting(s) {unknown}; see finexl.TrainConfig")
    return TrainConfig(**settings, **fixed)


def prepare_output(out: str | Path, resume: bool | str = False, overwrite: bool = False) -> None:
    """A training output folder must be new or empty, unless the run continues it (``resume``) or replaces it."""
    out = Path(out)
    if resume:
        return
    if out.is_file():
        raise InputError(f"output folder {out} is a file")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(
                f"output folder {out} exists and is not empty; pass --resume to continue its run or --overwrite to "
                "replace it"
            )
        shutil.rmtree(out)


# the pipeline classes the trainer knows (one text encoder, a UNet, epsilon or v prediction)
TRAINABLE_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "FluxPipeline")


def check_trainable(base: Path) -> None:
    """Refuse, before anything loads, a base whose pipeline class the trainer does not know."""

    if not (base / "model_index.json").is_file():
        return  # load_pipeline names what is missing
    name = read_model_index(base).get("_class_name")
    if name not in TRAINABLE_PIPELINES:
        raise ConfigError(
            f"finexl trains {', '.join(TRAINABLE_PIPELINES)} bases; {base} is a {name}, which it cannot train"
        )


def run_training(
    data: str | Path,
    out: str | Path,
    config: TrainConfig,
    base: str | Path | None = None,
    class_data: str | Path | None = None,
    num_class_images: int = 100,
    resume: bool | str = False,
    overwrite: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
    progress: bool = False,
) -> TrainResult:
    """Load the base (default: the toy preset's), read the images, and train ``config`` into ``out``."""

    base = Path(base) if base is not None else toy_base()
    check_trainable(base)
    pipe = load_pipeline(base, device=device, dtype=dtype)
    resolution = config.resolution or native_resolution(pipe)
    images = load_image_folder(data, resolution=resolution, require_captions=config.instance_prompt is None)
    prepare_output(out, resume, overwrite)
    class_set = None
    if class_data is not None:
        class_set = ensure_class_images(
            pipe, class_data, config.class_prompt, num_class_images, resolution, seed=config.seed, progress=progress
        )
    return train(
        pipe,
        images,
        config,
        out,
        class_data=class_set,
        resume=resume or False,
        base_fingerprint=fingerprint_folder(base),
        device=device,
        progress=progress,
    )


def train_lora(
    data: str | Path,
    out: str | Path,
    *,
    base: str | Path | None = None,
    config: TrainConfig | None = None,
    resume: bool | str = False,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = False,
    **settings,
) -> TrainResult:
    """Fine-tune a LoRA on a folder of captioned images; writes ``out/pytorch_lora_weights.safetensors``.

    Settings are :class:`TrainConfig`'s fields as keywords (``rank=8``, ``max_steps=400``, ...) or ``config=``.

    Example::

        finexl.train_lora("runs/red-data", "runs/red-lora", max_steps=200)
    """
    cfg = _config(config, settings)
    if cfg.method != "lora":
        raise ConfigError(f"train_lora trains a LoRA; got method {cfg.method!r}")
    return run_training(
        data, out, cfg, base=base, resume=resume, overwrite=overwrite, device=device, progress=progress
    )


def train_dreambooth(
    instance_data: str | Path,
    out: str | Path,
    instance_prompt: str,
    *,
    class_prompt: str | None = None,
    class_data: str | Path | None = None,
    num_class_images: int = 100,
    mode: str = "lora",
    base: str | Path | None = None,
    config: TrainConfig | None = None,
    resume: bool | str = False,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = False,
    **settings,
) -> TrainResult:
    """DreamBooth: every instance image captioned ``instance_prompt`` ("a sks dog"); with ``class_prompt``, prior
    preservation on class images the base draws (kept in ``class_data``, default ``OUT-class-images``).
    ``mode``: ``"lora"`` saves a LoRA, ``"full"`` a whole pipeline."""
    if not instance_prompt or not instance_prompt.strip():
        raise ConfigError("DreamBooth needs a non-empty instance prompt")
    if config is None:
        cfg = _config(None, settings, method=mode, instance_prompt=instance_prompt, class_prompt=class_prompt)
    else:
        cfg = _config(config, settings)
    if class_prompt and class_data is None:
        class_data = Path(out).with_name(Path(out).name + "-class-images")
    return run_training(
        instance_data,
        out,
        cfg,
        base=base,
        class_data=class_data if class_prompt else None,
        num_class_images=num_class_images,
        resume=resume,
        overwrite=overwrite,
        device=device,
        progress=progress,
    )
