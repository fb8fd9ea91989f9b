"""From a decomposition to aspect scores in [0, 1], with bootstrap intervals and a null threshold.

Score of a row r of the design (a concept direction) with weight w::

    score_r = clip(w * ||F_r|| / spread_r, -1, 1),   spread_r = q95 - q05 of <e, F_r / ||F_r||> over the images

i.e. how far the personalized outputs moved along the concept, as a fraction of how far the images themselves
spread along it (from their 5th to their 95th percentile; base and personalized images pooled). 1 means the outputs
moved across the whole range the images cover; the sign gives the direction (times -1 for an antonym row). A
concept's score is its row of largest magnitude; an aspect's score is the largest magnitude among its concepts, and
its direction that concept's sign.

Intervals: the estimator is refitted on bootstrap resamples of the pairs; percentile intervals. Null: the same
estimator is fitted on the base against itself (other seeds) with the two images of each pair randomly swapped, which
under "no change" leaves their distribution unchanged; an aspect's threshold is a high quantile of its null score,
and an aspect counts as changed only when the lower end of its interval is above that threshold. finexl's default
is in two parts (a joint fit for whether and toward what, a projection for how much): an aspect is changed only
when both its scores pass this test against their own nulls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm
from sklearn.base import clone

from finexl.explanation.concepts import ConceptBank, ConceptDirections, Design
from finexl.explanation.decompose import DEFAULT_METHOD, Decomposition, make_estimator
from finexl.explanation.result import AspectScore
from finexl.explanation.sequential import Evidence
from finexl.stats import bootstrap_indices, null_threshold, percentile_interval, spreads, swap_masks


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


def fit_row_scores(
    estimator: Decomposition, design: Design, D: np.ndarray, spread: np.ndarray, reference: np.ndarray | None = None
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """One fit: the row scores, the residual, and the joint fit's row scores (None for a one-part method)."""
    est = clone(estimator).fit(design.rows, D, reference, design.two_sided)
    return est.row_scores(design.rows, spread), est.residual_, est.joint_row_scores(design.rows, spread)


def bootstrap_row_scores(
    estimator: Decomposition,
    design: Design,
    D: np.ndarray,
    spread: np.ndarray,
    n_boot: int,
    seed: int,
    reference: np.ndarray | None = None,
):
    """Row scores, residuals and joint-fit row scores (None for a one-part method) refitted on ``n_boot``
    resamples of the pairs (rows of ``D`` and ``reference``)."""
    draws = bootstrap_indices(np.random.default_rng(seed), len(D), n_boot)
    return estimator.bootstrap_scores(design.rows, D, spread, draws, reference, design.two_sided)


def null_row_scores(
    estimator: Decomposition,
    design: Design,
    base: np.ndarray,
    null_base: np.ndarray,
    spread: np.ndarray,
    n_null: int,
    seed: int,
):
    """Row scores (and joint-fit row scores of a two-part method) of the base against itself (``null_base``: other
    seeds) under ``n_null`` random swaps of the two images of a pair, which flip the sign of its difference and
    leave its distribution unchanged under "no change"."""
    swaps = swap_masks(np.random.default_rng(seed), n_null, len(base))
    return estimator.null_scores(design.rows, base, null_base, spread, swaps, design.two_sided)


def _margin(distance: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``distance`` (lower interval end minus threshold) in standard errors; +-inf where the bootstrap did not vary
    (a sign of 0 counts as not CHANGED, as in the test)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = distance / sd
    return np.where(sd > 0, out, np.where(distance > 0, np.inf, -np.inf))


def _finite(x) -> float | None:
    """JSON has no NaN: methods without a residual (per-image scorers) report None."""
    return float(x) if np.isfinite(x) else None


def accounted_for(
    joint: np.ndarray,
    point: np.ndarray,
    agg: Aggregated,
    design: Design,
    bank: ConceptBank,
    spread: np.ndarray,
    changed: np.ndarray,
    above: np.ndarray,
) -> dict[str, dict[str, float]]:
    """For each aspect whose projection clears its null but that is not CHANGED: how much of its score each
    CHANGED aspect's part of the joint fit accounts for.

    The joint fit reconstructs V_div as ``sum_r w_r F_r``; the part of CHANGED aspect ``c`` is the sum over its
    rows. Projected on the row behind aspect ``a``'s score, in the same units as that score (over the spread, signed
    so that positive pushes the way ``a`` moved), it says how far ``a``'s own score is ``c``'s change seen along
    ``a``. Returns ``{a: {c: share of score}}`` for the CHANGED aspects that push ``a`` its way.
    """
    weights = joint * spread / np.maximum(np.linalg.norm(design.rows, axis=1), 1e-12)  # row scores -> weights
    member = np.array([bank.aspects.index(bank.concepts[c].aspect) for c in design.concept_index])
    parts = {c: weights[member == c] @ design.rows[member == c] for c in np.flatnonzero(changed)}  # (d,) each
    out = {}
    for a, name in enumerate(bank.aspects):
        if changed[a] or not above[a]:
            continue
        if not parts:  # nothing is CHANGED, so nothing accounts for it
            out[name] = {}
            continue
        rows = np.flatnonzero(design.concept_index == agg.aspect_concept[0, a])
        r = rows[np.argmax(np.abs(point[rows]))]
        unit = design.rows[r] / max(float(np.linalg.norm(design.rows[r])), 1e-12)
        sign = design.polarity[r] * agg.aspect_sign[0, a]
        shares = {bank.aspects[c]: float(sign * (part @ unit) / spread[r]) for c, part in parts.items()}
        out[name] = {c: round(v, 4) for c, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v > 0}
    return out


@dataclass
class Decomposed:
    """Stage 6's result: the parts of an explanation it computes, and the evidence the sequential rule reads."""

    aspects: list[AspectScore]  # CHANGED first, then the rest, each by score
    concepts: list[dict]
    residual: dict
    divergence: dict
    evidence: Evidence

    def to_dict(self) -> dict:
        """The explanation's parts as its JSON holds them (the evidence stays out)."""
        return {
            "aspects": [asdict(a) for a in self.aspects],
            "concepts": self.concepts,
            "residual": self.residual,
            "divergence": self.divergence,
        }

    def score_of(self, aspects: list[str]) -> np.ndarray:
        """The scores of ``aspects``, in that order."""
        score = {a.aspect: a.score for a in self.aspects}
        return np.array([score[a] for a in aspects])


def decompose_divergence(
    base: np.ndarray,
    tuned: np.ndarray,
    directions: ConceptDirections,
    method: str = DEFAULT_METHOD,
    null_base: np.ndarray | None = None,
    n_bootstrap: int = 200,
    n_null: int = 200,
    confidence: float = 0.9,
    null_quantile: float = 0.95,
    seed: int = 0,
) -> Decomposed:
    """Scores, intervals and null thresholds from paired embeddings (rows of ``base`` and ``tuned`` are pairs).

    ``null_base``: embeddings of the base on the same prompts with other seeds; without it no aspect is tested.
    Returns the ``aspects`` (those reported as changed first, then the rest, each by score), ``concepts``,
    ``residual`` and ``divergence`` parts of an explanation, and the ``evidence`` the sequential rule of
    :mod:`finexl.explanation.sequential` reads.
    """
    if base.shape != tuned.shape:
        raise ValueError(f"base and personalized embeddings differ in shape: {base.shape} vs {tuned.shape}")
    bank: ConceptBank = directions.bank
    estimator = make_estimator(method)
    design = directions.design(estimator.design)
    D = tuned - base
    spread = spreads(np.concatenate([base, tuned]), design.rows)
    boot, boot_residual, boot_joint = bootstrap_row_scores(estimator, design, D, spread, n_bootstrap, seed, base)
    point, residual, joint = fit_row_scores(estimator, design, D, spread, base)
    if boot_joint is not None:  # two-part (finexl): the joint fit reports the median over refits (bagging)
        joint, residual = np.median(boot_joint, axis=0), float(np.median(boot_residual))
    agg, agg_boot = aggregate(point, design, bank), aggregate(boot, design, bank)
    a_low, a_high = percentile_interval(agg_boot.aspect, confidence)
    c_low, c_high = percentile_interval(agg_boot.concept, confidence)
    r_low, r_high = (
        percentile_interval(boot_residual, confidence) if np.isfinite(boot_residual).all() else (np.nan, np.nan)
    )
    n_aspects = len(bank.aspects)
    threshold, changed = np.full(n_aspects, np.nan), np.zeros(n_aspects, dtype=bool)
    z_crit = float(norm.ppf(1 - (1 - confidence) / 2))
    z = np.full(n_aspects, np.nan)
    j_low = j_high = j_threshold = None
    if null_base is not None:
        null, null_joint = null_row_scores(estimator, design, base, null_base, spread, n_null, seed + 1)
        threshold = null_threshold(aggregate(null, design, bank).aspect, null_quantile)
        changed = a_low > threshold
        z = z_crit + _margin(a_low - threshold, agg_boot.aspect.std(axis=0))
        if joint is not None:  # the joint fit must see the change too
            joint_boot = aggregate(boot_joint, design, bank).aspect
            j_low, j_high = percentile_interval(joint_boot, confidence)
            j_threshold = null_threshold(aggregate(null_joint, design, bank).aspect, null_quantile)
            changed &= j_low > j_threshold
            z = np.minimum(z, z_crit + _margin(j_low - j_threshold, joint_boot.std(axis=0)))
    # which concept and direction: the joint fit's where it picked one in the aspect, else the score's own
    agg_joint = aggregate(joint, design, bank) if joint is not None else None
    accounted = (
        accounted_for(joint, point, agg, design, bank, spread, changed, a_low > threshold)
        if joint is not None and null_base is not None
        else {}
    )
    aspects = []
    for a, name in enumerate(bank.aspects):
        source = agg_joint if agg_joint is not None and agg_joint.aspect[0, a] > 0 else agg
        concept = bank.concepts[source.aspect_concept[0, a]]
        sign = source.aspect_sign[0, a]
        aspects.append(
            AspectScore(
                aspect=name,
                group=bank.group_of(name),
                score=float(agg.aspect[0, a]),
                interval=[float(a_low[a]), float(a_high[a])],
                direction="increase" if sign > 0 else ("decrease" if sign < 0 else "none"),
                concept=concept.phrase,
                toward=concept.phrase if sign >= 0 else (concept.antonym or f"less {concept.phrase}"),
                threshold=None if np.isnan(threshold[a]) else float(threshold[a]),
                changed=bool(changed[a]),
                joint_score=None if agg_joint is None else float(agg_joint.aspect[0, a]),
                joint_interval=None if j_low is None else [float(j_low[a]), float(j_high[a])],
                joint_threshold=None if j_threshold is None else float(j_threshold[a]),
                accounted_for=accounted.get(name),
            )
        )
    # the aspects reported as changed first, then the rest, each by score: a concept that only correlates with the
    # change (the joint fit gives it no weight) can outscore it when the images spread less along it
    aspects.sort(key=lambda r: (not r.changed, -r.score))
    concepts = [
        {
            "phrase": c.phrase,
            "antonym": c.antonym,
            "aspect": c.aspect,
            "score": float(agg.concept[0, i]),
            "interval": [float(c_low[i]), float(c_high[i])],
        }
        for i, c in enumerate(bank.concepts)
    ]
    v = D.mean(axis=0)
    rng = np.random.default_rng(seed + 2)
    boot_norms = [np.linalg.norm(D[idx].mean(axis=0)) for idx in bootstrap_indices(rng, len(D), n_bootstrap)]
    n_low, n_high = percentile_interval(np.asarray(boot_norms), confidence)
    return Decomposed(
        aspects=aspects,
        concepts=concepts,
        residual={"value": _finite(residual), "interval": [_finite(r_low), _finite(r_high)]},
        divergence={
            "n_pairs": int(len(D)),
            "norm": float(np.linalg.norm(v)),
            "norm_interval": [float(n_low), float(n_high)],
            "mean_pair_distance": float(np.linalg.norm(D, axis=1).mean()),
        },
        evidence=Evidence(z=z, z_crit=z_crit, boot=agg_boot.aspect),
    )
