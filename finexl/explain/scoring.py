"""From a decomposition to aspect scores in [0, 1], with bootstrap intervals and a null threshold.

Score of a row r of the design (a concept direction) with weight w::

    score_r = clip(w * ||F_r|| / spread_r, -1, 1),   spread_r = q95 - q05 of <e, F_r / ||F_r||> over the images

i.e. how far the personalized outputs moved along the concept, as a fraction of how far the images themselves
spread along it (from their 5th to their 95th percentile; base and personalized images pooled). 1 means the outputs
moved across the whole range the images cover; the sign gives the direction (times -1 for an antonym row). A
concept's score is its row of largest magnitude; an aspect's score is the largest magnitude among its concepts, and
its direction that concept's sign.

Intervals: the estimator is refitted on bootstrap resamples of the pairs; percentile intervals. Null: the same
estimator is fitted on the base against itself (other seeds) with random sign flips of the pair differences, which
under "no change" leaves their distribution unchanged; an aspect's threshold is a high quantile of its null score,
and an aspect counts as changed only when the lower end of its interval is above that threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import clone

from finexl.explain.concepts import ConceptBank, Design


def spreads(embeddings: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """q95 - q05 of the projections of ``embeddings`` onto each unit row."""
    norms = np.linalg.norm(rows, axis=1)
    unit = rows / np.where(norms > 0, norms, 1.0)[:, None]
    proj = embeddings @ unit.T
    spread = np.quantile(proj, 0.95, axis=0) - np.quantile(proj, 0.05, axis=0)
    return np.maximum(spread, 1e-6)


def row_scores(coef: np.ndarray, rows: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Signed score of every row (see the module docstring)."""
    return np.clip(coef * np.linalg.norm(rows, axis=1) / spread, -1.0, 1.0)


@dataclass
class Aggregated:
    concept: np.ndarray  # (..., n_concepts) signed
    aspect: np.ndarray  # (..., n_aspects) in [0, 1]
    aspect_sign: np.ndarray  # (..., n_aspects) +1 / -1 / 0
    aspect_concept: np.ndarray  # (..., n_aspects) index of the concept behind the aspect score


def aggregate(row: np.ndarray, design: Design, bank: ConceptBank) -> Aggregated:
    """Rows -> concepts -> aspects, for one score vector (k,) or a stack (b, k)."""
    row = np.atleast_2d(row)
    signed = row * design.polarity
    n_concepts = len(bank.concepts)
    concept = np.zeros((len(row), n_concepts))
    best = np.zeros((len(row), n_concepts))
    for r in range(row.shape[1]):
        c = design.concept_index[r]
        bigger = np.abs(signed[:, r]) > best[:, c]
        concept[bigger, c] = signed[bigger, r]
        best[bigger, c] = np.abs(signed[bigger, r])
    aspects = bank.aspects
    member = np.array([aspects.index(c.aspect) for c in bank.concepts])
    aspect = np.zeros((len(row), len(aspects)))
    sign = np.zeros((len(row), len(aspects)))
    which = np.zeros((len(row), len(aspects)), dtype=int)
    for a in range(len(aspects)):
        idx = np.flatnonzero(member == a)
        mags = np.abs(concept[:, idx])
        pick = idx[np.argmax(mags, axis=1)]
        which[:, a] = pick
        aspect[:, a] = mags.max(axis=1)
        sign[:, a] = np.sign(concept[np.arange(len(row)), pick])
    return Aggregated(concept, aspect, sign, which)


def fit_row_scores(estimator, design: Design, D: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, float]:
    est = clone(estimator).fit(design.rows, D)
    return row_scores(est.coef_, design.rows, spread), est.residual_


def bootstrap_row_scores(estimator, design: Design, D: np.ndarray, spread: np.ndarray, n_boot: int, seed: int
                         ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Row scores and residuals refitted on ``n_boot`` resamples of the pairs (rows of ``D``)."""
    rng = np.random.default_rng(seed)
    scores, residuals = np.zeros((n_boot, len(design.rows))), np.zeros(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, len(D), len(D))
        scores[b], residuals[b] = fit_row_scores(estimator, design, D[idx], spread)
    return scores, residuals


def null_row_scores(estimator, design: Design, D_null: np.ndarray, spread: np.ndarray, n_null: int, seed: int
                    ) -> np.ndarray:  # fmt: skip
    """Row scores of the base against itself under ``n_null`` random sign flips of the pair differences."""
    rng = np.random.default_rng(seed)
    scores = np.zeros((n_null, len(design.rows)))
    for m in range(n_null):
        flips = rng.choice([-1.0, 1.0], size=len(D_null))
        scores[m], _ = fit_row_scores(estimator, design, D_null * flips[:, None], spread)
    return scores
