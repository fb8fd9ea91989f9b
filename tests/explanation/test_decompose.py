"""Decomposition estimators on directions with a known answer."""

import numpy as np
import pytest
from sklearn.base import clone

from finexl.explanation.decompose import ESTIMATORS, make_estimator


def directions(k=12, d=32, seed=0):
    return np.random.default_rng(seed).normal(size=(k, d)) / np.sqrt(d)


@pytest.mark.parametrize("name", sorted(set(ESTIMATORS) - {"visdiff", "splice"}))
def test_estimators_follow_the_sklearn_contract(name):
    F = directions()
    est = make_estimator(name)
    assert clone(est).get_params() == est.get_params()
    D = np.random.default_rng(1).normal(size=(20, 32)) * 0.01 + 1.5 * F[4]
    assert est.fit(F, D) is est
    assert est.coef_.shape == (12,) and est.n_features_in_ == 32
    assert 0.0 <= est.residual_ <= 1.0 + 1e-9
    assert int(np.argmax(np.abs(est.coef_) * np.linalg.norm(F, axis=1))) == 4  # the one concept in the shift


def test_finexl_recovers_signed_sparse_mixtures_that_nnls_cannot():
    F = directions()
    v = 2.0 * F[3] - 1.0 * F[7]  # an increase and a decrease
    fx = make_estimator("finexl").fit(F, v)
    np.testing.assert_allclose(fx.coef_[[3, 7]], [2.0, -1.0], atol=1e-8)
    assert np.count_nonzero(fx.coef_) == 2 and fx.residual_ < 1e-8
    nn = make_estimator("nnls").fit(F, v)
    assert (nn.coef_ >= 0).all() and nn.residual_ > 0.1


def test_values_without_antonyms_only_take_positive_joint_weight():
    # an aspect of three values centred on their mean (axes sum to zero) and one antonym axis
    rng = np.random.default_rng(3)
    values = rng.normal(size=(3, 32))
    axes = np.concatenate([values - values.mean(axis=0), rng.normal(size=(1, 32))])
    two_sided = np.array([False, False, False, True])
    v = -axes[1] - 0.5 * axes[3]  # value 1 lost share (to values 0 and 2); the antonym axis decreased
    free = make_estimator("finexl").fit(axes, v)
    assert free.coef_[1] < 0  # without the flags the fit names the loser: "less <value 1>"
    fx = make_estimator("finexl").fit(axes, v, two_sided=two_sided)
    assert (fx.coef_[:3] >= 0).all() and fx.coef_[0] > 0.5 and fx.coef_[2] > 0.5  # the gainers
    assert fx.coef_[3] == pytest.approx(-0.5) and fx.residual_ < 1e-8  # a decrease on the antonym axis stays
    # the projection (how much) reads the same way: the loser gets no negative share, the antonym axis keeps its sign
    assert free.projection_[1] < 0 and fx.projection_[1] == 0.0
    assert fx.projection_[0] == pytest.approx(free.projection_[0]) and fx.projection_[0] > 0
    assert fx.projection_[3] == pytest.approx(free.projection_[3]) and fx.projection_[3] < 0
    with pytest.raises(ValueError, match="two_sided"):
        make_estimator("finexl").fit(axes, v, two_sided=[True, False])


def test_paper_stops_at_the_residual_bound():
    F = directions()
    v = F[2] + 0.05 * F[5]
    paper = make_estimator("paper", redundancy_threshold=1.0, target_residual=0.2).fit(F, v)
    assert np.count_nonzero(paper.coef_) == 1 and paper.residual_ < 0.2 and paper.coef_[2] > 0.9


def test_bad_shapes_and_unknown_methods_are_named():
    with pytest.raises(ValueError, match="do not match"):
        make_estimator("nnls").fit(directions(d=8), np.zeros(9))
    with pytest.raises(ValueError, match="NaN"):
        make_estimator("finexl").fit(directions(), np.full(32, np.nan))
    with pytest.raises(ValueError, match="unknown decomposition method"):
        make_estimator("magic")


def test_set_comparison_scorers_need_the_base_images_and_find_the_shift():
    rng = np.random.default_rng(0)
    F = directions(d=32)
    U = F / np.linalg.norm(F, axis=1, keepdims=True)
    base = rng.normal(size=(80, 32)) * 0.1
    D = np.tile(0.5 * U[6], (80, 1)) + rng.normal(size=(80, 32)) * 0.01
    for name in ("visdiff", "splice"):
        est = make_estimator(name)
        with pytest.raises(ValueError, match="reference"):
            est.fit(F, D)
        est.fit(F, D, reference=base)
        scores = est.row_scores(F, np.ones(12))
        assert int(np.argmax(scores)) == 6 and -1 <= scores.min() <= scores.max() <= 1
    auroc = make_estimator("visdiff").fit(F, D, reference=base).auroc_
    assert auroc[6] > 0.95 and auroc[6] == auroc.max()  # the shifted images lie further along concept 6
    gs = make_estimator("gsclip").fit(F, D)
    assert int(np.argmax(gs.cosine_)) == 6 and gs.cosine_[6] > 0.99
