"""The judge's readings of known renders: the toy world's ground truth has the right sign and size."""

import dataclasses

import numpy as np
import pytest

from finexl.bench.measure import compare_readings
from finexl.toyworld.judge import load_judge
from finexl.toyworld.render import render

N = 240
SEED = 31_000  # no training script uses it


@pytest.fixture(scope="module")
def pairs():
    """N random renders, and the same renders (same aspects, same noise seed) with half of them turned red and
    every one blurred by 0.3 more: the known shift the readings must find."""
    from finexl.toyworld.aspects import sample_aspects

    rng = np.random.default_rng(SEED)
    base, shifted, was_red = [], [], []
    for i in range(N):
        a = sample_aspects(rng)
        seed = int(rng.integers(2**31))
        b = dataclasses.replace(a, colour="red" if i % 2 == 0 else a.colour, blur=min(1.0, a.blur + 0.3))
        base.append(render(a, seed=seed))
        shifted.append(render(b, seed=seed))
        was_red.append(a.colour == "red")
    return np.stack(base), np.stack(shifted), np.asarray(was_red)


def test_a_render_shifted_toward_red_reads_red_up_by_the_shifted_share(pairs):
    base, shifted, was_red = pairs
    reading = compare_readings(load_judge(), base, shifted)
    expected = np.mean((np.arange(N) % 2 == 0) & ~was_red)  # images turned red that were not red before
    red = reading["categorical"]["colour"]["difference"]["red"]
    assert red == pytest.approx(expected, abs=0.05), (red, expected)
    assert reading["categorical"]["colour"]["most_increased"] == "red"
    others = {v: d for v, d in reading["categorical"]["colour"]["difference"].items() if v != "red"}
    assert sum(others.values()) == pytest.approx(-red, abs=1e-9) and max(others.values()) <= 0.02
    # graded: every image 0.3 blurrier, except those already near the top of the scale
    assert reading["graded"]["blur"]["difference"] == pytest.approx(0.3, abs=0.08)
    # an aspect that was not touched stays put
    assert abs(reading["categorical"]["shape"]["total_variation"]) <= 0.08


def test_identical_sets_read_no_change(pairs):
    base, _, _ = pairs
    reading = compare_readings(load_judge(), base, base)
    assert all(r["total_variation"] == 0 for r in reading["categorical"].values())
    assert all(r["difference"] == 0 for r in reading["graded"].values())


def test_the_judges_null_moves_the_shifted_aspects_and_only_them(pairs):
    """With other renders of the same aspect distribution as the null (the base on other seeds), colour and blur
    clear the judge's null; aspects the shift left alone do not (at most one of the ten, by chance at 95 %)."""
    from finexl.toyworld.aspects import sample_aspects

    base, shifted, _ = pairs
    rng = np.random.default_rng(SEED + 1)
    null = np.stack([render(sample_aspects(rng), seed=int(rng.integers(2**31))) for _ in range(N)])
    reading = compare_readings(load_judge(), base, shifted, null)
    assert reading["null_quantile"] == 0.95
    assert reading["categorical"]["colour"]["moved"] and reading["graded"]["blur"]["moved"]
    untouched = [
        r for name, r in {**reading["categorical"], **reading["graded"]}.items() if name not in ("colour", "blur")
    ]
    assert sum(r["moved"] for r in untouched) <= 1
    # the thresholds are the judge's own noise between two sets of renders: above 0, below the real shifts
    assert all(0 < r["null_threshold"] < 0.25 for r in untouched)
    assert reading["categorical"]["colour"]["null_threshold"] < reading["categorical"]["colour"]["difference"]["red"]
    # without a null there is no verdict
    assert "moved" not in compare_readings(load_judge(), base, shifted)["graded"]["blur"]
