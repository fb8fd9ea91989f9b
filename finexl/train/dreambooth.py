"""DreamBooth's class images: what the base model draws for the class prompt, kept for prior preservation.

As in diffusers' DreamBooth script, the class folder is topped up to ``num_class_images`` with images the base
pipeline generates for the class prompt, and images already there are reused. Each new image is written to a
temporary name and renamed, so an interrupted run leaves only whole images.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from PIL import Image

from finexl.errors import ConfigError
from finexl.sampling import SamplerConfig, sample_images
from finexl.train.data import IMAGE_SUFFIXES, ImageSet, load_image_folder

logger = logging.getLogger(__name__)


def ensure_class_images(
    pipe,
    class_dir: str | Path,
    class_prompt: str,
    num_class_images: int,
    resolution: int,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    progress: bool = True,
) -> ImageSet:
    """Top ``class_dir`` up to ``num_class_images`` images of ``class_prompt`` from ``pipe`` and read them all."""

    if not class_prompt or not class_prompt.strip():
        raise ConfigError("prior preservation needs a non-empty class prompt")
    if num_class_images < 1:
        raise ConfigError(f"num_class_images must be >= 1, got {num_class_images}")
    class_dir = Path(class_dir)
    class_dir.mkdir(parents=True, exist_ok=True)
    have = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    missing = num_class_images - len(have)
    if missing > 0:
        logger.info("generating %d class images for %r in %s", missing, class_prompt, class_dir)
        sampler = sampler or SamplerConfig(height=resolution, width=resolution)
        seeds = [seed + len(have) + i for i in range(missing)]
        images = sample_images(pipe, [class_prompt] * missing, seeds, sampler, progress=progress)
        for s, image in zip(seeds, images, strict=True):
            path = class_dir / f"class-{s:06d}.png"
            tmp = class_dir / f".{path.name}.tmp"
            Image.fromarray(image).save(tmp, format="PNG")
            os.replace(tmp, path)
    data = load_image_folder(class_dir, resolution=resolution, require_captions=False)
    if len(data) > num_class_images:
        data = ImageSet(data.images[:num_class_images], None, data.files[:num_class_images])
    return ImageSet(data.images, None, data.files)
