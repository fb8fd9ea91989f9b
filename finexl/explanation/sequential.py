"""``--samples auto``: draw pairs in rounds and stop once every verdict is settled (stochastic curtailment).

The fixed rule (``samples=N``) draws N pairs and calls an aspect CHANGED when the lower end of its bootstrap interval
lies above its null threshold. The automatic rule draws the same pairs in rounds (the first ``n`` of the N, so its
pairs are always a prefix of the fixed rule's) and, after each round, asks of every aspect how likely the verdict
of all N pairs is to differ from the verdict now. It stops as soon as that chance is at most ``error`` for every
CHANGED aspect and for the order of the CHANGED aspects, and the unchanged verdicts are settled in one of two senses
(``verdicts``); at N it stops anyway.

The test is *stochastic curtailment* of the fixed test (Lan, Simon and Halperin 1982, "Stochastically curtailed
tests in long-term clinical trials"). Each aspect's evidence is its margin ``z`` in bootstrap standard errors (the
fixed rule says CHANGED when ``z > z_crit``); across rounds the margin is treated as a Brownian motion
``B(t) = z sqrt(t)`` in the information time ``t = n / N``, so that given ``B(t)`` the final ``B(1)`` is normal with
variance ``1 - t``:

* an aspect is settled CHANGED when, *assuming no change at all* (drift 0), the N-pair rule would still say
  CHANGED with probability >= ``1 - error``. This is what keeps the error rate: stopping to declare a change only
  when the full test would declare it with conditional probability >= gamma under the null gives a false-positive
  rate of at most ``alpha / gamma`` (alpha: the fixed test's), i.e. at most ``1 / 0.95`` of the fixed rule's at the
  default ``error = 0.05``, however many rounds are looked at. A loop that stops at the first significant look has
  no such bound: its false-positive rate grows with the number of looks.
* an aspect is settled unchanged when its *predictive* probability of a CHANGED verdict at N is <= ``error``: the
  chance averaged over the drifts the pairs so far allow (a flat prior on the drift, so that given ``B(t)`` the
  final ``B(1)`` is normal with mean ``B(t) / t`` and variance ``(1 - t) / t``; Spiegelhalter, Freedman and
  Blackburn 1986). Plugging in the drift estimated so far instead ignores how uncertain it is after few pairs and,
  on simulated margins, disagreed with the fixed rule on 10 % of moderate changes where this agrees on 99 %
  (``tests/explanation/test_sequential.py``). Stopping early for "no change" can only lower the false-positive rate;
  what it costs is agreement with the fixed rule, measured in ``docs/speed.md``. With ``verdicts="each"`` (the
  default) every unchanged aspect must be settled so. With ``verdicts="share"`` the unchanged verdicts are settled
  together once the *expected share* of the model's verdicts that differ from the fixed rule's (the mean of every
  aspect's predictive flip chance, CHANGED ones included) is <= ``error``: the bound is then on what the benchmark's
  agreement measure counts, the share of verdicts equal to N pairs', and one borderline side effect no longer holds
  every model to the cap. An unchanged verdict whose flip chance is over one half still holds: stopping on it would
  report the less likely verdict (without this, a strong change still under its threshold after the first round
  was stopped on as "unchanged" among fifteen settled aspects). It cannot raise the false-positive rate: a CHANGED
  verdict still needs the bound above. Measured, "share" uses far fewer pairs but misses the strongest change of
  about a quarter of the benchmark's models (a change still under its null threshold after the first round, whose
  margin grows faster than the Brownian model assumes while the null threshold is estimated from few pairs), which
  is why it is not the default (``docs/speed.md``).
* two CHANGED aspects are in a settled order when the predictive probability that the order of their scores flips
  by N is <= ``error``.

The Brownian model is an approximation (scores are bootstrap quantities and the null threshold is re-estimated at
every round); the null false-positive rate and the agreement with 128 fixed pairs are measured on the benchmark's
suites by ``scripts/measure_sequential.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm


@dataclass
class Look:
    """One round: the pairs drawn so far, and what was not settled yet (aspect names, ``"a>b"`` for an order)."""

    n: int
    unsettled: list[str]

    @property
    def settled(self) -> bool:
        return not self.unsettled


VERDICT_RULES = ("each", "share")


def rounds(first: int, step: int, cap: int) -> list[int]:
    """Pairs drawn after each round: ``first, first + step, ...`` up to and including ``cap``."""
    first = min(first, cap)
    return list(range(first, cap, step)) + [cap]


@dataclass
class Evidence:
    """What the rule reads of a decomposition, per aspect in the concept bank's order: ``z``, the margin of the
    CHANGED test in bootstrap standard errors, shifted so that CHANGED is ``z > z_crit`` (the smaller of a
    two-part method's two tests; NaN without the null test), and ``boot``, the bootstrap aspect scores."""

    z: np.ndarray  # (n_aspects,)
    z_crit: float
    boot: np.ndarray  # (n_bootstrap, n_aspects)


def unsettled(
    evidence: Evidence, aspects: list[str], scores: np.ndarray, n: int, cap: int, error: float, verdicts: str = "each"
) -> list[str]:
    """What is not yet settled after ``n`` of ``cap`` pairs (see the module docstring).

    Args:
        evidence: of :func:`finexl.explanation.scoring.decompose_divergence`.
        aspects: the aspect names in the order of ``evidence`` (the concept bank's).
        scores: each aspect's score, same order.
        n: pairs drawn so far.
        cap: the pairs of the fixed rule this one stands in for.
        error: the largest accepted chance that a CHANGED verdict (or the order) differs from the fixed rule's, and
            the largest accepted flip chance of an unchanged verdict (``"each"``) or the largest accepted expected
            share of the model's verdicts that differ from the fixed rule's (``"share"``).
        verdicts: ``"share"`` or ``"each"`` (see the module docstring).
    """
    if verdicts not in VERDICT_RULES:
        raise ValueError(f"verdicts must be one of {VERDICT_RULES}, got {verdicts!r}")
    if n >= cap:
        return []
    t = n / cap
    z, z_crit, boot = np.asarray(evidence.z, float), float(evidence.z_crit), np.asarray(evidence.boot)
    if np.isnan(z).any():  # no null test, no verdicts: nothing can be settled before the cap
        return list(aspects)
    changed = z > z_crit
    with np.errstate(invalid="ignore"):  # +-inf margins give probabilities 0 or 1
        # CHANGED: the fixed rule would agree even with no change from here on (drift 0)
        keep_changed = norm.cdf((z * np.sqrt(t) - z_crit) / np.sqrt(1 - t))
        # unchanged: predictive probability that the fixed rule says CHANGED, B(1) ~ N(B(t) / t, (1 - t) / t)
        become_changed = norm.cdf((z - z_crit * np.sqrt(t)) / np.sqrt(1 - t))
    # predictive chance that each verdict now differs from the fixed rule's at the cap
    flip = np.where(changed, 1 - become_changed, become_changed)
    loose = ~changed & (become_changed > error)
    if verdicts == "share" and flip.mean() <= error:
        # the expected share of verdicts that differ is within error: only a verdict more likely than not to be
        # overturned still holds (stopping on it would report the less likely verdict)
        loose &= become_changed > 0.5
    out = [
        a
        for a, c, keep, hold in zip(aspects, changed, keep_changed, loose, strict=True)
        if (c and keep < 1 - error) or hold
    ]
    order = [i for i in np.argsort(-scores, kind="stable") if changed[i]]
    for i, j in zip(order, order[1:], strict=False):
        difference = boot[:, i] - boot[:, j]
        sd = difference.std()
        gap = scores[i] - scores[j]
        z_gap = gap / sd if sd > 0 else (np.inf if gap > 0 else 0.0)
        if norm.cdf(-z_gap / np.sqrt(1 - t)) > error:  # predictive probability of a flip
            out.append(f"{aspects[i]}>{aspects[j]}")
    return out
