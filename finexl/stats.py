"""The statistics every verdict of finexl rests on, written once: bootstrap resamples of the pairs, percentile
intervals, the sign-flip null (a random swap of the two images of a pair) and its threshold, the images' spread
along a direction and the paired move along it.

Used by the explanation's scores (:mod:`finexl.explanation.scoring` and the estimators of
:mod:`finexl.explanation.decompose`), search (:mod:`finexl.collection.search`) and the benchmark's comparison of
methods (:mod:`finexl.bench.metrics`). Every function takes a ``numpy.random.Generator``, so a seed fixes every
number; the draws are made in the order the functions are called.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def bootstrap_sample(rng: np.random.Generator, n: int) -> np.ndarray:
    """One bootstrap resample of ``n`` units: ``n`` indices drawn with replacement (empty for ``n = 0``)."""
    return rng.integers(0, n, n) if n else np.zeros(0, dtype=int)


def bootstrap_indices(rng: np.random.Generator, n: int, n_resamples: int) -> Iterator[np.ndarray]:
    """``n_resamples`` bootstrap resamples of ``n`` units, one index array each."""
    for _ in range(n_resamples):
        yield bootstrap_sample(rng, n)


def percentile_interval(samples, confidence: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The central ``confidence`` interval of ``samples`` along ``axis``: its ``(1 - c) / 2`` and ``(1 + c) / 2``
    quantiles."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    samples = np.asarray(samples)
    return np.quantile(samples, tail, axis=axis), np.quantile(samples, 1 - tail, axis=axis)


def swap_masks(rng: np.random.Generator, n_null: int, n: int) -> np.ndarray:
    """``(n_null, n)`` booleans: which pairs' two images are swapped in each draw of the null. Under "no change"
    (the base against itself with other seeds) a swap leaves the distribution of a pair's difference unchanged and
    flips its sign."""
    return rng.random((n_null, n)) < 0.5


def sign_flips(rng: np.random.Generator, n_null: int, n: int) -> np.ndarray:
    """The swaps of :func:`swap_masks` as signs: -1 where a pair is swapped, +1 where it is not."""
    return np.where(swap_masks(rng, n_null, n), -1.0, 1.0)


def null_threshold(null_scores, quantile: float, axis: int = 0) -> np.ndarray:
    """The ``quantile`` of the null's scores: what a model reaches against itself that often or less."""
    return np.quantile(np.asarray(null_scores), quantile, axis=axis)


def spreads(embeddings: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """How far the images spread along each direction: q95 - q05 of the projections of ``embeddings`` on each unit
    row (at least 1e-6)."""
    norms = np.linalg.norm(rows, axis=1)
    unit = rows / np.where(norms > 0, norms, 1.0)[:, None]
    proj = embeddings @ unit.T
    return np.maximum(np.quantile(proj, 0.95, axis=0) - np.quantile(proj, 0.05, axis=0), 1e-6)


def paired_moves(base: np.ndarray, tuned: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Each pair's move along the unit direction(s): ``tuned @ u - base @ u``, shape ``(n,)`` for one direction
    ``(d,)`` or ``(n, k)`` for ``(k, d)``."""
    unit = np.asarray(unit)
    unit = unit if unit.ndim == 1 else unit.T
    return tuned @ unit - base @ unit
