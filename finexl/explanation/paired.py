"""Paired sampling with a content-addressed image cache.

Base and personalized images share prompt and seed, hence initial noise (see :mod:`finexl.sampling`). Every image
is stored under a key made of the model's fingerprint, the sampler settings, the prompt and the seed, so base
images are generated once and reused for every LoRA explained against that base, and an interrupted run resumes:
each image is written to a temporary file and renamed, batch by batch, so the cache only ever holds whole images.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from finexl.sampling import SamplerConfig, sample_images
from finexl.utils import CACHE_READ_ERRORS, atomic_write_bytes

logger = logging.getLogger(__name__)


def lora_fingerprint(base_fingerprint: str, lora_fingerprint_: str, scale: float) -> str:
    text = json.dumps({"base": base_fingerprint, "lora": lora_fingerprint_, "scale": float(scale)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ImageCache:
    """Generated images on disk, addressed by (model fingerprint, sampler settings, prompt, seed)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _folder(self, model: str, sampler: SamplerConfig) -> Path:
        settings = asdict(sampler)
        del settings["batch_size"]  # batching changes nothing
        if settings["scheduler"] == "default":  # the pipeline's own: keys made before the setting existed stay valid
            del settings["scheduler"]
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        return self.root / "images" / model / digest

    @staticmethod
    def _name(prompt: str, seed: int) -> str:
        return hashlib.sha256(f"{prompt}\0{int(seed)}".encode()).hexdigest()[:32] + ".png"

    def load(
        self, model: str, sampler: SamplerConfig, prompts: list[str], seeds: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Images found in the cache and a boolean mask of the missing ones."""
        folder = self._folder(model, sampler)
        images = np.zeros((len(prompts), sampler.height, sampler.width, 3), dtype=np.uint8)
        missing = np.ones(len(prompts), dtype=bool)
        for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
            path = folder / self._name(prompt, seed)
            if not path.is_file():
                continue
            try:
                with Image.open(path) as im:
                    array = np.asarray(im.convert("RGB"))
            except (*CACHE_READ_ERRORS, SyntaxError) as err:  # PIL raises SyntaxError for some broken PNGs
                logger.warning("making again an unreadable cached image %s: %s", path, err)
                continue
            if array.shape != images.shape[1:]:
                logger.warning("making again a cached image of the wrong size %s: %s", path, array.shape)
                continue
            images[i], missing[i] = array, False
        return images, missing

    def store(self, model: str, sampler: SamplerConfig, prompts: list[str], seeds: list[int], images: np.ndarray):
        folder = self._folder(model, sampler)
        for prompt, seed, image in zip(prompts, seeds, images, strict=True):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            atomic_write_bytes(folder / self._name(prompt, seed), buffer.getvalue())


def cached_samples(
    get_pipe: Callable[[], object],
    model: str,
    prompts: list[str],
    seeds: list[int],
    sampler: SamplerConfig,
    cache: ImageCache | None,
    desc: str = "sample",
    progress: bool = False,
) -> np.ndarray:
    """Images for every (prompt, seed): from the cache where present, generated (and stored) otherwise.

    ``get_pipe`` is called only when something is missing, so a fully cached model is never loaded.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    if cache is None:
        images, missing = (
            np.zeros((len(prompts), sampler.height, sampler.width, 3), np.uint8),
            np.ones(len(prompts), bool),
        )
    else:
        images, missing = cache.load(model, sampler, prompts, seeds)
    todo = np.flatnonzero(missing)
    if len(todo):
        logger.info(
            "%s: %d of %d images to generate (%d cached)", desc, len(todo), len(prompts), len(prompts) - len(todo)
        )
        pipe = get_pipe()
        starts = range(0, len(todo), sampler.batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress):
            idx = todo[start : start + sampler.batch_size]
            batch_prompts, batch_seeds = [prompts[i] for i in idx], [seeds[i] for i in idx]
            batch = sample_images(pipe, batch_prompts, batch_seeds, sampler)
            images[idx] = batch
            if cache is not None:
                cache.store(model, sampler, batch_prompts, batch_seeds, batch)
    return images
