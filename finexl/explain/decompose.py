"""Decompose the divergence onto concept directions: V_div ~ sum_i w_i F_i + residual.

Every method is a scikit-learn style estimator: parameters in ``__init__``, ``fit(F, D)`` returns ``self``, learned
state ends in ``_``:

* ``coef_``: (k,) weight of each row of ``F`` (the same units as the rows: ``coef_ @ F`` approximates V_div);
* ``residual_``: ||V_div - coef_ @ F|| / ||V_div||, the unexplained part.

``F`` is (k, d), one text direction per row; ``D`` is (n, d) per-pair embedding differences (V_div is their mean)
or V_div itself. Each class names the :meth:`~finexl.explain.concepts.ConceptDirections.design` it decomposes onto
(``design = "raw"`` or ``"axes"``).

Methods:

* ``paper``: FineXL as published: concepts ordered by cosine with V_div, kept greedily unless their summed cosine
  with the already-kept ones exceeds ``redundancy_threshold``, then added one at a time to a plain least-squares fit
  until the relative residual is below ``target_residual``.
* ``nnls``: non-negative least squares on the raw directions.
* ``whitened-nnls``: the public re-implementation's fix: the directions are centred, projected onto their first
  ``n_components`` principal components and whitened; V_div is projected the same way; non-negative least squares
  there.
* ``sparse``: SpLiCE-style non-negative lasso on unit-norm directions.
* ``finexl`` (the default): signed orthogonal matching pursuit on concept *axes* (antonym pairs, or values centred
  within their aspect). Signed weights on axes read decreases ("less blurry") as well as increases; picking one
  axis at a time and refitting the picked set jointly explains a shift once, so a correlated concept (a synonym, or
  "vivid" next to "bright") only gets weight for what the first one left unexplained. Its reported weights are the
  median over refits on bootstrap resamples of the pairs (``bagged = True``), which drops axes that noise picks.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls
from sklearn.base import BaseEstimator


def _as_vdiv(D: np.ndarray) -> np.ndarray:
    D = np.asarray(D, dtype=np.float64)
    v = D.mean(axis=0) if D.ndim == 2 else D
    if v.ndim != 1:
        raise ValueError(f"expected per-pair differences (n, d) or V_div (d,), got shape {D.shape}")
    if not np.isfinite(v).all():
        raise ValueError("the divergence has NaN or infinite entries")
    return v


def _check(F: np.ndarray, v: np.ndarray) -> np.ndarray:
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 2 or F.shape[1] != v.shape[0]:
        raise ValueError(f"directions of shape {F.shape} do not match a divergence of dimension {v.shape[0]}")
    if len(F) == 0:
        raise ValueError("no concept directions to decompose onto")
    return F


def _relative_residual(F: np.ndarray, v: np.ndarray, coef: np.ndarray) -> float:
    norm = np.linalg.norm(v)
    return float(np.linalg.norm(v - coef @ F) / norm) if norm > 0 else 0.0


def _unit(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(F, axis=1)
    norms = np.where(norms > 0, norms, 1.0)
    return F / norms[:, None], norms


class _Decomposition(BaseEstimator):
    design = "raw"

    def _finish(self, F: np.ndarray, v: np.ndarray, coef: np.ndarray):
        self.coef_ = coef
        self.residual_ = _relative_residual(F, v, coef)
        self.n_features_in_ = F.shape[1]
        return self


class PaperDecomposition(_Decomposition):
    """FineXL as published (redundancy filter, then least squares until the residual bound)."""

    def __init__(self, redundancy_threshold: float = 0.1, target_residual: float = 0.2):
        self.redundancy_threshold = redundancy_threshold
        self.target_residual = target_residual

    def fit(self, F, D):
        v = _as_vdiv(D)
        F = _check(F, v)
        U, _ = _unit(F)
        order = np.argsort(-(U @ v))
        kept: list[int] = []
        for i in order:
            if not kept or float(np.sum(U[kept] @ U[i])) <= self.redundancy_threshold:
                kept.append(int(i))
        coef = np.zeros(len(F))
        for m in range(1, len(kept) + 1):
            chosen = kept[:m]
            w, *_ = np.linalg.lstsq(F[chosen].T, v, rcond=None)
            coef = np.zeros(len(F))
            coef[chosen] = w
            if _relative_residual(F, v, coef) < self.target_residual:
                break
        self.kept_ = np.asarray(kept)
        return self._finish(F, v, coef)


class NNLSDecomposition(_Decomposition):
    """Non-negative least squares on the raw directions."""

    def fit(self, F, D):
        v = _as_vdiv(D)
        F = _check(F, v)
        coef, _ = nnls(F.T, v)
        return self._finish(F, v, coef)


class WhitenedNNLSDecomposition(_Decomposition):
    """Non-negative least squares in a whitened PCA subspace of the (centred) directions."""

    def __init__(self, n_components: int = 16):
        self.n_components = n_components

    def fit(self, F, D):
        v = _as_vdiv(D)
        F = _check(F, v)
        centred = F - F.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        q = int(min(self.n_components, np.sum(s > s[0] * 1e-8)))
        basis, scale = vt[:q], s[:q] / np.sqrt(max(len(F) - 1, 1))
        Z = centred @ basis.T / scale  # (k, q)
        target = v @ basis.T / scale  # (q,)
        coef, _ = nnls(Z.T, target)
        self.components_, self.scale_ = basis, scale
        return self._finish(F, v, coef)


class SparseDecomposition(_Decomposition):
    """SpLiCE-style non-negative lasso on unit-norm directions; ``alpha_ratio`` of the smallest all-zero penalty."""

    def __init__(self, alpha_ratio: float = 0.05):
        self.alpha_ratio = alpha_ratio

    def fit(self, F, D):
        from sklearn.linear_model import Lasso

        v = _as_vdiv(D)
        F = _check(F, v)
        U, norms = _unit(F)
        alpha_max = float(np.max(U @ v)) / len(v)
        if alpha_max <= 0:
            return self._finish(F, v, np.zeros(len(F)))
        lasso = Lasso(alpha=self.alpha_ratio * alpha_max, positive=True, fit_intercept=False, max_iter=20_000)
        lasso.fit(U.T, v)
        return self._finish(F, v, lasso.coef_ / norms)


class FinexlDecomposition(_Decomposition):
    """Signed orthogonal matching pursuit on concept axes (finexl's default).

    Repeatedly pick the axis most aligned (in absolute cosine) with what is still unexplained, refit all picked axes
    by least squares, and stop after ``max_concepts`` or when the next axis would explain less than ``min_gain`` of
    the remaining squared norm.
    """

    design = "axes"
    # Report the median over bootstrap refits (bagging): an axis picked only on some resamples of the pairs (noise
    # that happened to line up with it) gets a median of zero, while one picked on most keeps its weight.
    bagged = True

    def __init__(self, max_concepts: int = 8, min_gain: float = 0.02):
        self.max_concepts = max_concepts
        self.min_gain = min_gain

    def fit(self, F, D):
        v = _as_vdiv(D)
        F = _check(F, v)
        U, _ = _unit(F)
        chosen: list[int] = []
        coef = np.zeros(len(F))
        residual = v.copy()
        while len(chosen) < min(self.max_concepts, len(F)):
            remaining_sq = float(residual @ residual)
            if remaining_sq <= 1e-24:
                break
            corr = np.abs(U @ residual)
            corr[chosen] = -1.0
            best = int(np.argmax(corr))
            if corr[best] ** 2 / remaining_sq < self.min_gain:
                break
            chosen.append(best)
            w, *_ = np.linalg.lstsq(F[chosen].T, v, rcond=None)
            coef = np.zeros(len(F))
            coef[chosen] = w
            residual = v - coef @ F
        self.chosen_ = np.asarray(chosen, dtype=int)
        return self._finish(F, v, coef)


ESTIMATORS = {
    "finexl": FinexlDecomposition,
    "paper": PaperDecomposition,
    "nnls": NNLSDecomposition,
    "whitened-nnls": WhitenedNNLSDecomposition,
    "sparse": SparseDecomposition,
}
DEFAULT_METHOD = "finexl"


def make_estimator(name: str, **params):
    if name not in ESTIMATORS:
        raise ValueError(f"unknown decomposition method {name!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[name](**params)
