"""Decompose the divergence onto concept directions: V_div ~ sum_i w_i F_i + residual.

Every method is a scikit-learn style estimator: parameters in ``__init__``, ``fit(F, D)`` returns ``self``, learned
state ends in ``_``:

* ``coef_``: (k,) weight of each row of ``F`` (the same units as the rows: ``coef_ @ F`` approximates V_div);
* ``residual_``: ||V_div - coef_ @ F|| / ||V_div||, the unexplained part.

``F`` is (k, d), one text direction per row; ``D`` is (n, d) per-pair embedding differences (V_div is their mean)
or V_div itself; methods that compare the two image sets themselves also take ``reference``, the (n, d) base
embeddings (the personalized ones are ``reference + D``). Each class names the
:meth:`~finexl.explanation.concepts.ConceptDirections.design` it works on (``design = "raw"``, ``"axes"`` or
``"anchors"``) and turns its weights into signed scores with ``row_scores`` (see :mod:`finexl.explanation.scoring`).

Methods (the first five decompose V_div; the last three are the benchmark's rival scorers):

* ``paper``: FineXL as published: concepts ordered by cosine with V_div, kept greedily unless their summed cosine
  with the already-kept ones exceeds ``redundancy_threshold``, then added one at a time to a plain least-squares fit
  until the relative residual is below ``target_residual``.
* ``nnls``: non-negative least squares on the raw directions.
* ``whitened-nnls``: the public re-implementation's fix: the directions are centred, projected onto their first
  ``n_components`` principal components and whitened; V_div is projected the same way; non-negative least squares
  there.
* ``sparse``: SpLiCE-style non-negative lasso on unit-norm directions.
* ``finexl`` (the default), in two parts on concept *axes* (antonym pairs, or values centred within their aspect):
  a joint fit, signed orthogonal matching pursuit, says whether an aspect changed and toward which concept; the
  projection of V_div on each axis says how much. Signed weights on antonym axes read decreases ("less blurry") as
  well as increases (a value without an antonym, such as a colour, takes only positive weight: its aspect changed
  toward it); picking one axis at a time and refitting the picked set jointly explains a shift once, so a
  correlated concept (a synonym, or "vivid" next to "bright") gets no weight of its own for what the first one
  explains. The joint weights reported are the median over refits on bootstrap resamples of the pairs.
* ``gsclip``: each concept alone, by the cosine of its direction with V_div (GSCLIP-style).
* ``visdiff``: each phrase by the AUROC of its image-text similarity between the two image sets (VisDiff-style).
* ``splice``: per-image sparse non-negative codes over the concept anchors, mean code change (SpLiCE-style).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import Lasso
from sklearn.utils.validation import check_is_fitted

from finexl.errors import ConfigError


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


def row_scores(coef: np.ndarray, rows: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Signed score of every row: its weight times its length over the images' spread along it, in [-1, 1] (see
    :mod:`finexl.explanation.scoring`)."""
    return np.clip(coef * np.linalg.norm(rows, axis=1) / spread, -1.0, 1.0)


class Decomposition(BaseEstimator):
    """The interface of every method (a scikit-learn estimator).

    ``fit(F, D, reference=None, two_sided=None)`` returns ``self`` with ``coef_`` (a weight per row of ``F``),
    ``residual_`` (NaN for methods that do not decompose V_div) and ``n_features_in_``. ``row_scores`` gives the
    reported score of every row, ``joint_row_scores`` the joint fit's of a two-part method (None for the others);
    ``bootstrap_scores`` and ``null_scores`` refit on resamples of the pairs and on swapped null pairs. Calling any
    of them before ``fit`` raises scikit-learn's ``NotFittedError``. ``reference`` (the base embeddings) is read by
    the methods that compare the image sets themselves, ``two_sided`` (a flag per row) by those on concept axes.
    """

    design = "raw"  # the ConceptDirections.design it works on: "raw", "axes" or "anchors"

    def fit(self, F, D, reference=None, two_sided=None):
        raise NotImplementedError

    def row_scores(self, rows: np.ndarray, spread: np.ndarray) -> np.ndarray:
        """Signed score per row: the weight times the row's length, over the images' spread along it."""
        check_is_fitted(self)
        return row_scores(self.coef_, rows, spread)

    def joint_row_scores(self, rows: np.ndarray, spread: np.ndarray) -> np.ndarray | None:
        """A two-part method's joint-fit scores (whether, toward what); None for a one-part method."""
        check_is_fitted(self)
        return None

    def bootstrap_scores(self, F, D, spread, draws, reference=None, two_sided=None):
        """``(row scores, residuals, joint row scores or None)`` of a refit on each resample in ``draws`` (index
        arrays over the pairs, :func:`finexl.stats.bootstrap_indices`)."""
        fits = [clone(self).fit(F, D[idx], None if reference is None else reference[idx], two_sided) for idx in draws]
        return self._stacked(fits, F, spread) + (self._joints(fits, F, spread),)

    def null_scores(self, F, base, null_base, spread, swaps, two_sided=None):
        """``(row scores, joint row scores or None)`` of the base against itself (``null_base``: other seeds) under
        each row of ``swaps`` (:func:`finexl.stats.swap_masks`: which pairs' two images change places)."""
        fits = []
        for swap in swaps:
            first = np.where(swap[:, None], null_base, base)
            second = np.where(swap[:, None], base, null_base)
            fits.append(clone(self).fit(F, second - first, first, two_sided))
        return self._stacked(fits, F, spread)[0], self._joints(fits, F, spread)

    @staticmethod
    def _stacked(fits, F, spread):
        return np.stack([f.row_scores(F, spread) for f in fits]), np.array([f.residual_ for f in fits])

    @staticmethod
    def _joints(fits, F, spread):
        joints = [f.joint_row_scores(F, spread) for f in fits]
        return None if joints[0] is None else np.stack(joints)

    def _finish(self, F: np.ndarray, v: np.ndarray, coef: np.ndarray):
        self.coef_ = coef
        self.residual_ = _relative_residual(F, v, coef)
        self.n_features_in_ = F.shape[1]
        return self


class PaperDecomposition(Decomposition):
    """FineXL as published (redundancy filter, then least squares until the residual bound)."""

    def __init__(self, redundancy_threshold: float = 0.1, target_residual: float = 0.2):
        self.redundancy_threshold = redundancy_threshold
        self.target_residual = target_residual

    def fit(self, F, D, reference=None, two_sided=None):
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


class NNLSDecomposition(Decomposition):
    """Non-negative least squares on the raw directions."""

    def fit(self, F, D, reference=None, two_sided=None):
        v = _as_vdiv(D)
        F = _check(F, v)
        coef, _ = nnls(F.T, v)
        return self._finish(F, v, coef)


class WhitenedNNLSDecomposition(Decomposition):
    """Non-negative least squares in a whitened PCA subspace of the (centred) directions."""

    def __init__(self, n_components: int = 16):
        self.n_components = n_components

    def fit(self, F, D, reference=None, two_sided=None):
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


class SparseDecomposition(Decomposition):
    """SpLiCE-style non-negative lasso on unit-norm directions; ``alpha_ratio`` of the smallest all-zero penalty."""

    def __init__(self, alpha_ratio: float = 0.05):
        self.alpha_ratio = alpha_ratio

    def fit(self, F, D, reference=None, two_sided=None):
        v = _as_vdiv(D)
        F = _check(F, v)
        U, norms = _unit(F)
        alpha_max = float(np.max(U @ v)) / len(v)
        if alpha_max <= 0:
            return self._finish(F, v, np.zeros(len(F)))
        lasso = Lasso(alpha=self.alpha_ratio * alpha_max, positive=True, fit_intercept=False, max_iter=20_000)
        lasso.fit(U.T, v)
        return self._finish(F, v, lasso.coef_ / norms)


class SignedOMP(Decomposition):
    """Signed orthogonal matching pursuit on concept axes: the joint fit inside finexl's default.

    Repeatedly pick the axis most aligned with what is still unexplained, refit all picked axes by least squares,
    and stop after ``max_concepts`` or when the next axis would explain less than ``min_gain`` of the remaining
    squared norm. ``two_sided`` (fit parameter, one flag per axis) says which axes may take a negative weight: an
    axis between a phrase and its antonym ("blurry" - "sharp") may, and a negative weight reads as the antonym; a
    value centred within its aspect ("red" minus the mean colour) may not, since the values of an aspect move
    together (red gaining is every other colour losing) and "less yellow" would name a loser where a gainer
    exists. Without it every axis is two-sided.
    """

    design = "axes"

    def __init__(self, max_concepts: int = 8, min_gain: float = 0.02):
        self.max_concepts = max_concepts
        self.min_gain = min_gain

    def fit(self, F, D, reference=None, two_sided=None):
        v = _as_vdiv(D)
        F = _check(F, v)
        U, _ = _unit(F)
        two_sided = np.ones(len(F), dtype=bool) if two_sided is None else np.asarray(two_sided, dtype=bool)
        if two_sided.shape != (len(F),):
            raise ValueError(f"two_sided has shape {two_sided.shape}; expected one flag per direction ({len(F)},)")
        chosen: list[int] = []
        coef = np.zeros(len(F))
        residual = v.copy()
        while len(chosen) < min(self.max_concepts, len(F)):
            remaining_sq = float(residual @ residual)
            if remaining_sq <= 1e-24:
                break
            corr = U @ residual
            corr = np.where(two_sided, np.abs(corr), corr)
            corr[chosen] = -np.inf
            best = int(np.argmax(corr))
            if corr[best] <= 0 or corr[best] ** 2 / remaining_sq < self.min_gain:
                break
            chosen.append(best)
            coef = np.zeros(len(F))
            coef[chosen] = _signed_lstsq(F[chosen], v, two_sided[chosen])
            residual = v - coef @ F
        self.chosen_ = np.asarray(chosen, dtype=int)
        return self._finish(F, v, coef)


def one_sided(weights: np.ndarray, two_sided=None) -> np.ndarray:
    """``weights`` with the negative ones of one-sided axes (``two_sided`` False: a value without an antonym, which
    moves only toward itself) set to 0; unchanged without flags."""
    if two_sided is None:
        return weights
    return np.where(np.asarray(two_sided, dtype=bool), weights, np.maximum(weights, 0.0))


def _signed_lstsq(F: np.ndarray, v: np.ndarray, two_sided: np.ndarray) -> np.ndarray:
    """Least squares ``w @ F ~ v`` with ``w >= 0`` where not ``two_sided`` (free sign where it is): non-negative
    least squares on the rows plus the negated two-sided rows, ``w = w+ - w-``."""
    if two_sided.all():
        return np.linalg.lstsq(F.T, v, rcond=None)[0]
    A = np.concatenate([F, -F[two_sided]]).T  # (d, k + k2)
    w, _ = nnls(A, v)
    out = w[: len(F)].copy()
    out[two_sided] -= w[len(F) :]
    return out


class FinexlDecomposition(SignedOMP):
    """finexl's default: a joint fit says *whether* and *toward what*, a projection says *how much*.

    * ``coef_`` (whether, toward what): the signed OMP weights of :class:`SignedOMP` on the concept axes: the one
      decomposition of V_div (``residual_`` is its unexplained part). An aspect counts as changed only if its
      joint-fit score is above its own null too, and its direction and concept come from the joint fit, where it
      picked one; the joint fit's reported weights are the median over bootstrap refits (bagging), which drops axes
      that noise picks.
    * ``projection_`` (how much): how far V_div reaches along each unit axis on its own, in the units of the rows.
      A correlated concept gets its share here, which is right for "how far did the outputs move along *vivid*",
      and the joint fit keeps it from being reported as a change of its own. On a one-sided axis (a value without
      an antonym) only a move toward the value counts, as in the joint fit: a categorical aspect's score is how far
      the outputs moved toward the value that gained most, never "less triangle".

    Measured on the toy benchmark (``scripts/ablate_finexl.py``), the joint weights alone order levels worse and the
    projections alone report correlated concepts as changes (see the README).
    """

    def fit(self, F, D, reference=None, two_sided=None):
        super().fit(F, D, reference, two_sided)
        v = _as_vdiv(D)
        U, norms = _unit(_check(F, v))
        self.projection_ = one_sided((U @ v) / norms, two_sided)
        return self

    def row_scores(self, rows: np.ndarray, spread: np.ndarray) -> np.ndarray:
        """The reported score: the projection's (how much)."""
        check_is_fitted(self)
        return row_scores(self.projection_, rows, spread)

    def joint_row_scores(self, rows: np.ndarray, spread: np.ndarray) -> np.ndarray:
        """The joint fit's scores (whether, toward what)."""
        check_is_fitted(self)
        return row_scores(self.coef_, rows, spread)


class GSCLIPScorer(Decomposition):
    """GSCLIP-style: every concept scored on its own by the cosine of its direction with V_div (no joint fit); the
    weight is the projection of V_div on the unit direction."""

    def fit(self, F, D, reference=None, two_sided=None):
        v = _as_vdiv(D)
        F = _check(F, v)
        U, norms = _unit(F)
        proj = U @ v
        self.cosine_ = proj / max(float(np.linalg.norm(v)), 1e-12)
        best = int(np.argmax(np.abs(proj)))
        coef = np.zeros(len(F))
        coef[best] = proj[best] / norms[best]
        self._finish(F, v, coef)  # residual after the single best direction
        self.coef_ = proj / norms
        return self


def _paired_sets(D, reference) -> tuple[np.ndarray, np.ndarray]:
    if reference is None:
        raise ValueError("this method compares the image sets themselves: pass the base embeddings as reference")
    reference = np.asarray(reference, dtype=np.float64)
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape != reference.shape:
        raise ValueError(
            f"need per-pair differences and base embeddings of the same shape, got {D.shape}, {reference.shape}"
        )
    return reference, reference + D


class VisDiffRanker(Decomposition):
    """VisDiff-style: rank each phrase by how well its image-text similarity separates the personalized images
    from the base images (AUROC); score = 2 AUROC - 1 in [-1, 1]. Rows are text anchors ("prompt, phrase")."""

    design = "anchors"

    def fit(self, F, D, reference=None, two_sided=None):
        base, tuned = _paired_sets(D, reference)
        U, _ = _unit(_check(F, base[0]))
        sb, st = base @ U.T, tuned @ U.T  # (n, k)
        # AUROC by ranks (Mann-Whitney U) per phrase
        both = np.concatenate([st, sb])
        ranks = np.argsort(np.argsort(both, axis=0, kind="stable"), axis=0, kind="stable") + 1.0
        n1, n0 = len(st), len(sb)
        auc = (ranks[:n1].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)
        self.auroc_ = auc
        self.coef_ = 2 * auc - 1
        self.residual_ = float("nan")
        self.n_features_in_ = F.shape[1]
        return self

    def row_scores(self, rows, spread):
        check_is_fitted(self)
        return self.coef_.copy()


class SpliceDecomposition(Decomposition):
    """SpLiCE-style: every image is decomposed on its own as a sparse non-negative mix of centred, unit concept
    anchors (non-negative lasso; penalty ``l1`` times the smallest penalty that zeroes every weight, 0.2 chosen
    among 0.05, 0.2 and 0.5 on toy LoRAs); the weight of a row is the mean over pairs of the code of the
    personalized image minus the code of the base image, scored against the spread of the codes.

    The codes are per image, so the pairs' code differences are computed once (``pair_codes``) and resampled, not
    re-solved, for intervals and the null.
    """

    design = "anchors"

    def __init__(self, l1: float = 0.2):
        self.l1 = l1

    def pair_codes(self, F, D, reference) -> tuple[np.ndarray, np.ndarray]:
        """Per-pair code differences (n, k) and the codes' spread (k,)."""
        base, tuned = _paired_sets(D, reference)
        F = _check(F, base[0])
        U, _ = _unit(F - F.mean(axis=0))
        centre = base.mean(axis=0)

        def code(x):  # the penalty is l1 times the smallest one that zeroes every weight of this image
            alpha_max = float(np.max(U @ x)) / len(x)
            if alpha_max <= 0:
                return np.zeros(len(U))
            lasso = Lasso(alpha=self.l1 * alpha_max, positive=True, fit_intercept=False, max_iter=5000)
            return lasso.fit(U.T, x).coef_.copy()

        def codes(E):
            X = E - centre
            X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
            return np.stack([code(x) for x in X])

        cb, ct = codes(base), codes(tuned)
        pooled = np.concatenate([cb, ct])
        spread = np.maximum(np.quantile(pooled, 0.95, axis=0) - np.quantile(pooled, 0.05, axis=0), 1e-6)
        return ct - cb, spread

    def fit(self, F, D, reference=None, two_sided=None):
        delta, self.code_spread_ = self.pair_codes(F, D, reference)
        self.coef_ = delta.mean(axis=0)
        self.residual_ = float("nan")  # per-image codes do not decompose V_div
        self.n_features_in_ = np.asarray(F).shape[1]
        return self

    def row_scores(self, rows, spread):
        check_is_fitted(self)
        return np.clip(self.coef_ / self.code_spread_, -1.0, 1.0)

    def bootstrap_scores(self, F, D, spread, draws, reference=None, two_sided=None):
        """The codes are per image: the pairs' code changes are computed once and resampled, not re-solved."""
        delta, code_spread = self.pair_codes(F, D, reference)
        scores = np.stack([np.clip(delta[idx].mean(axis=0) / code_spread, -1.0, 1.0) for idx in draws])
        return scores, np.full(len(scores), np.nan), None

    def null_scores(self, F, base, null_base, spread, swaps, two_sided=None):
        """A swap flips the sign of the pair's code change."""
        delta, code_spread = self.pair_codes(F, null_base - base, base)
        flips = np.where(swaps, -1.0, 1.0)
        return np.stack([np.clip((delta * f[:, None]).mean(axis=0) / code_spread, -1.0, 1.0) for f in flips]), None


ESTIMATORS = {
    "finexl": FinexlDecomposition,
    "paper": PaperDecomposition,
    "nnls": NNLSDecomposition,
    "whitened-nnls": WhitenedNNLSDecomposition,
    "sparse": SparseDecomposition,
    "gsclip": GSCLIPScorer,
    "visdiff": VisDiffRanker,
    "splice": SpliceDecomposition,
}
DEFAULT_METHOD = "finexl"


def make_estimator(name: str, **params) -> Decomposition:
    """The method called ``name`` (a key of ``ESTIMATORS``), unfitted."""
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown decomposition method {name!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[name](**params)
