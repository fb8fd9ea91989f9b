"""The statistics every verdict rests on (finexl/stats.py), checked against what they must give."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from finexl.explanation.decompose import ESTIMATORS, make_estimator
from finexl.stats import (
    bootstrap_indices,
    null_threshold,
    paired_moves,
    percentile_interval,
    sign_flips,
    spreads,
    swap_masks,
)


def test_bootstrap_resamples_draw_with_replacement_and_give_the_standard_error_of_a_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    draws = list(bootstrap_indices(np.random.default_rng(1), len(x), 2000))
    assert len(draws) == 2000 and all(len(d) == 200 for d in draws)
    assert np.mean([len(np.unique(d)) for d in draws]) == pytest.approx(200 * (1 - (1 - 1 / 200) ** 200), rel=0.02)
    se = np.std([x[d].mean() for d in draws])
    assert se == pytest.approx(x.std() / np.sqrt(len(x)), rel=0.1)
    again = list(bootstrap_indices(np.random.default_rng(1), len(x), 2000))
    assert all(np.array_equal(a, b) for a, b in zip(draws, again, strict=True))  # a seed fixes every draw


def test_the_percentile_interval_is_the_central_share_of_the_samples():
    samples = np.arange(1001.0)
    assert percentile_interval(samples, 0.9) == pytest.approx((50.0, 950.0))
    assert percentile_interval(samples, 0.5) == pytest.approx((250.0, 750.0))
    low, high = percentile_interval(np.stack([samples, -samples], axis=1), 0.8)
    np.testing.assert_allclose([low, high], [[100.0, -900.0], [900.0, -100.0]])
    with pytest.raises(ValueError, match="confidence"):
        percentile_interval(samples, 1.0)


def test_the_sign_flip_null_of_a_difference_without_change_has_the_spread_of_its_mean():
    rng = np.random.default_rng(2)
    swaps = swap_masks(np.random.default_rng(3), 4000, 100)
    assert swaps.shape == (4000, 100) and swaps.mean() == pytest.approx(0.5, abs=0.01)
    assert np.array_equal(sign_flips(np.random.default_rng(3), 4000, 100), np.where(swaps, -1.0, 1.0))
    d = rng.normal(size=100) + 5.0  # a pair difference far from 0: flips make its mean symmetric about 0
    means = (sign_flips(np.random.default_rng(4), 4000, 100) * d).mean(axis=1)
    assert abs(means.mean()) < 0.05 and means.std() == pytest.approx(np.sqrt((d**2).mean() / 100), rel=0.05)
    assert null_threshold(np.abs(means), 0.95) == pytest.approx(1.96 * np.sqrt((d**2).mean() / 100), rel=0.08)


def test_spread_and_paired_moves_along_a_direction():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(500, 4))
    u = np.array([1.0, 0, 0, 0])
    assert spreads(base, np.array([[3.0, 0, 0, 0]]))[0] == pytest.approx(2 * 1.645, rel=0.1)  # q95 - q05 of N(0, 1)
    tuned = base + 0.5 * u
    np.testing.assert_allclose(paired_moves(base, tuned, u), 0.5)
    assert paired_moves(base, tuned, np.stack([u, u[::-1]])).shape == (500, 2)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_every_estimator_refuses_to_score_before_it_is_fitted(name):
    est = make_estimator(name)
    with pytest.raises(NotFittedError):
        est.row_scores(np.eye(3), np.ones(3))
    with pytest.raises(NotFittedError):
        est.joint_row_scores(np.eye(3), np.ones(3))
