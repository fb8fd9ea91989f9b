"""Rendered data sets: images, their exact aspect values, and captions, deterministic for a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from finexl.errors import ConfigError
from finexl.toyworld.aspects import CATEGORICAL, GRADED, Aspects, sample_aspects
from finexl.toyworld.captions import caption
from finexl.toyworld.render import render


@dataclass
class RenderedSet:
    images: np.ndarray  # (n, size, size, 3) uint8
    aspects: list[Aspects]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.aspects)

    def categorical_labels(self) -> np.ndarray:
        """Index of each categorical value. Shape (n, n_categorical), int64."""
        return np.array(
            [[a.values.index(getattr(x, a.name)) for a in CATEGORICAL] for x in self.aspects], dtype=np.int64
        )

    def graded_levels(self) -> np.ndarray:
        """Level of each graded aspect. Shape (n, n_graded), float32."""
        return np.array([[getattr(x, a.name) for a in GRADED] for x in self.aspects], dtype=np.float32)


def item_seed(seed: int, index: int) -> int:
    """The render seed of item ``index`` of a set drawn with ``seed``, independent of the set's length."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def render_set(n: int, seed: int, size: int = 32, fixed: dict | None = None, progress: bool = False) -> RenderedSet:
    """Draw ``n`` random aspect combinations (some aspects optionally ``fixed``), render and caption them."""
    if n < 1:
        raise ConfigError(f"number of images must be >= 1, got {n}")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    aspects, captions = [], []
    for i in tqdm(range(n), desc="render", disable=not progress):
        rng = np.random.default_rng(item_seed(seed, i))
        a = sample_aspects(rng, **(fixed or {}))
        images[i] = render(a, seed=int(rng.integers(2**31)), size=size)
        aspects.append(a)
        captions.append(caption(a, rng)[0])
    return RenderedSet(images=images, aspects=aspects, captions=captions)
