"""Scores: the documented formula, aggregation to concepts and aspects, and the null threshold."""

import numpy as np

from finexl.explain.concepts import ConceptDirections, parse_concept_bank
from finexl.explain.explainer import decompose_divergence
from finexl.explain.scoring import aggregate, row_scores, spreads


def test_score_is_the_shift_over_the_image_spread():
    rows = np.array([[2.0, 0.0], [0.0, 1.0]])
    images = np.stack([np.linspace(0, 1, 101), np.linspace(0, 4, 101)], axis=1)
    spread = spreads(images, rows)
    np.testing.assert_allclose(spread, [0.9, 3.6])  # q95 - q05
    np.testing.assert_allclose(row_scores(np.array([0.09, -0.9]), rows, spread), [0.2, -0.25])
    assert row_scores(np.array([5.0, 0.0]), rows, spread)[0] == 1.0  # clipped


def test_aggregate_takes_the_largest_row_with_its_polarity():
    bank = parse_concept_bank({"aspects": {
        "blur": {"concepts": [{"phrase": "blurry", "antonym": "sharp"}]},
        "colour": {"concepts": ["red", "blue"]},
    }})  # fmt: skip
    design = ConceptDirections(bank, bank.phrases(), np.eye(4)).design("raw")
    agg = aggregate(np.array([0.1, 0.4, 0.2, -0.3]), design, bank)  # blurry, sharp, red, blue
    np.testing.assert_allclose(agg.concept[0], [-0.4, 0.2, -0.3])  # "sharp" is a decrease of blurry
    np.testing.assert_allclose(agg.aspect[0], [0.4, 0.3])
    np.testing.assert_allclose(agg.aspect_sign[0], [-1, -1])


def _world(seed=0, n=64, d=24):
    rng = np.random.default_rng(seed)
    bank = parse_concept_bank({"aspects": {
        "blur": {"concepts": [{"phrase": "blurry", "antonym": "sharp"}]},
        "colour": {"concepts": ["red", "blue", "green"]},
        "size": {"concepts": [{"phrase": "large", "antonym": "small"}]},
    }})  # fmt: skip
    directions = ConceptDirections(bank, bank.phrases(), rng.normal(size=(len(bank.phrases()), d)) / np.sqrt(d))
    base = rng.normal(size=(n, d))
    return rng, bank, directions, base


def test_a_real_shift_is_changed_and_the_base_against_itself_is_not():
    rng, bank, directions, base = _world()
    axis = directions.row("blurry") - directions.row("sharp")
    shifted = base + 1.5 * axis / np.linalg.norm(axis) + rng.normal(size=base.shape) * 0.05
    null_base = rng.normal(size=base.shape)
    res = decompose_divergence(base, shifted, directions, "finexl", null_base=null_base, n_bootstrap=50, n_null=50)
    top = res["aspects"][0]
    assert top["aspect"] == "blur" and top["direction"] == "increase" and top["changed"]
    assert top["interval"][0] <= top["score"] <= top["interval"][1]
    smaller = base - 1.5 * axis / np.linalg.norm(axis)
    res = decompose_divergence(base, smaller, directions, "finexl", null_base=null_base, n_bootstrap=50, n_null=50)
    assert res["aspects"][0]["direction"] == "decrease" and res["aspects"][0]["toward"] == "sharp"
    same = base + rng.normal(size=base.shape) * 0.01  # paired, nothing systematic
    res = decompose_divergence(base, same, directions, "finexl", null_base=null_base, n_bootstrap=50, n_null=50)
    assert not any(a["changed"] for a in res["aspects"])
