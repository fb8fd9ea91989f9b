"""Scores: the documented formula, aggregation to concepts and aspects, and the null threshold."""

import numpy as np
import pytest

from finexl.explanation.concepts import ConceptDirections, parse_concept_bank
from finexl.explanation.decompose import row_scores
from finexl.explanation.result import format_explanation
from finexl.explanation.scoring import aggregate, decompose_divergence
from finexl.stats import spreads


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
    top = res.aspects[0]
    assert top.aspect == "blur" and top.direction == "increase" and top.changed
    assert top.interval[0] <= top.score <= top.interval[1]
    smaller = base - 1.5 * axis / np.linalg.norm(axis)
    res = decompose_divergence(base, smaller, directions, "finexl", null_base=null_base, n_bootstrap=50, n_null=50)
    assert res.aspects[0].direction == "decrease" and res.aspects[0].toward == "sharp"
    same = base + rng.normal(size=base.shape) * 0.01  # paired, nothing systematic
    res = decompose_divergence(base, same, directions, "finexl", null_base=null_base, n_bootstrap=50, n_null=50)
    assert not any(a.changed for a in res.aspects)


def _vivid_near_bright(rng, d):
    """Concept directions in which "vivid" (saturation) lies close to "bright" (brightness); returns them and the
    unit bright-dark and vivid-muted axes."""
    bank = parse_concept_bank({"aspects": {
        "brightness": {"concepts": [{"phrase": "bright", "antonym": "dark"}]},
        "saturation": {"concepts": [{"phrase": "vivid", "antonym": "muted"}]},
        "size": {"concepts": [{"phrase": "large", "antonym": "small"}]},
    }})  # fmt: skip
    vectors = {p: rng.normal(size=d) / np.sqrt(d) for p in bank.phrases()}
    bright_axis = vectors["bright"] - vectors["dark"]
    vectors["vivid"] = vectors["muted"] + 0.8 * bright_axis + 0.8 * rng.normal(size=d) / np.sqrt(d)
    directions = ConceptDirections(bank, bank.phrases(), np.stack([vectors[p] for p in bank.phrases()]))
    vivid_axis = vectors["vivid"] - vectors["muted"]
    return directions, bright_axis / np.linalg.norm(bright_axis), vivid_axis / np.linalg.norm(vivid_axis)


def _bright_shift(d: int = 24, n: int = 96):
    """A pure brightness shift of seeded base embeddings, with null embeddings and the vivid-near-bright bank."""
    rng = np.random.default_rng(3)
    directions, unit, _ = _vivid_near_bright(rng, d)
    base, null_base = rng.normal(size=(n, d)) * 0.3, rng.normal(size=(n, d)) * 0.3
    return rng, directions, unit, base, null_base, base + 0.4 * unit + rng.normal(size=(n, d)) * 0.02


def test_finexl_scores_how_much_by_projection_and_reports_only_what_the_joint_fit_needs():
    # "vivid" (saturation) is built to lie close to "bright" (brightness): a pure brightness shift moves the outputs
    # along both axes, so both get a projection score, but only brightness is needed to explain it
    rng, directions, unit, base, null_base, tuned = _bright_shift()
    d, n = base.shape[1], len(base)
    res = decompose_divergence(base, tuned, directions, "finexl", null_base=null_base, n_bootstrap=50, n_null=50)
    by = {a.aspect: a for a in res.aspects}
    assert by["brightness"].changed and by["brightness"].direction == "increase"
    assert by["saturation"].score > 0.5 * by["brightness"].score  # it did move along vivid...
    assert by["saturation"].joint_score == 0.0 and not by["saturation"].changed  # ...but is not a change
    table = format_explanation({**res.to_dict(), "method": "finexl"}).splitlines()
    assert "joint" in table[0] and table[1].split()[0] == "brightness" and "CHANGED" in table[1]
    row = next(line for line in table if line.startswith("saturation"))
    assert "0.000" in row and "CHANGED" not in row
    # the projection alone (gsclip on the same axes) would call it changed: the joint fit is what stops it
    gs = decompose_divergence(base, tuned, directions, "gsclip", null_base=null_base, n_bootstrap=50, n_null=50)
    assert {a.aspect: a for a in gs.aspects}["saturation"].changed
    # and weaker shifts get smaller scores, in order
    weak = [decompose_divergence(base, base + s * unit + rng.normal(size=(n, d)) * 0.02, directions, "finexl",
                                 n_bootstrap=30) for s in (0.02, 0.05, 0.1)]  # fmt: skip
    scores = [{a.aspect: a.score for a in w.aspects}["brightness"] for w in weak]
    assert 0 < scores[0] < scores[1] < scores[2]


def test_aspects_reported_as_changed_come_first_even_when_a_correlated_one_scores_higher():
    # "vivid" lies close to "bright" and the images hardly vary along it, so a pure brightness shift gives vivid
    # the larger score (a shift over a small spread); the joint fit needs only brightness
    rng = np.random.default_rng(3)
    d, n = 24, 96
    directions, bright, vivid = _vivid_near_bright(rng, d)

    def squeeze(x):
        return x - 0.9 * np.outer(x @ vivid, vivid)

    base, null_base = squeeze(rng.normal(size=(n, d)) * 0.3), squeeze(rng.normal(size=(n, d)) * 0.3)
    tuned = base + 0.4 * bright + rng.normal(size=(n, d)) * 0.02
    res = decompose_divergence(base, tuned, directions, "finexl", null_base=null_base, n_bootstrap=50, n_null=50)
    by = {a.aspect: a for a in res.aspects}
    assert by["saturation"].score > by["brightness"].score and not by["saturation"].changed
    assert [a.aspect for a in res.aspects] == ["brightness", "saturation", "size"]
    assert format_explanation({**res.to_dict(), "method": "finexl"}).splitlines()[1].split()[0] == "brightness"


def test_the_changed_rule_is_the_one_stated_and_a_correlated_aspect_is_accounted_for_by_the_change():
    # a pure brightness shift: saturation ("vivid" lies close to "bright") clears its own null, but the joint fit
    # explains the shift with brightness alone, and brightness's part of the fit accounts for saturation's score
    _, directions, _, base, null_base, tuned = _bright_shift()
    res = decompose_divergence(base, tuned, directions, "finexl", null_base=null_base, n_bootstrap=50, n_null=50)
    for a in res.aspects:  # CHANGED is exactly: interval above the null, and the joint interval above its own
        both = a.interval[0] > a.threshold and a.joint_interval[0] > a.joint_threshold
        assert a.changed == both and a.joint_interval[0] <= a.joint_score <= a.joint_interval[1]
    by = {a.aspect: a for a in res.aspects}
    sat = by["saturation"]
    assert sat.interval[0] > sat.threshold and not sat.changed  # above its null, not CHANGED
    assert list(sat.accounted_for) == ["brightness"]
    # brightness's part of the joint fit is (nearly) the whole mean shift, so seen along vivid it is the score
    assert abs(sat.accounted_for["brightness"] - sat.score) < 0.1 * sat.score
    assert by["brightness"].accounted_for is None and by["size"].accounted_for in ({}, None)
    table = format_explanation({**res.to_dict(), "method": "finexl"})
    assert "saturation   brightness accounts for" in table and "j-null" in table.splitlines()[0]
    # the interval width follows the confidence asked for
    wide = decompose_divergence(base, tuned, directions, "finexl", null_base=null_base, n_bootstrap=50, n_null=50,
                                confidence=0.99)  # fmt: skip
    low, high = {a.aspect: a for a in wide.aspects}["brightness"].interval
    assert high - low > by["brightness"].interval[1] - by["brightness"].interval[0]


def test_the_null_keeps_the_false_positive_rate_on_seeded_null_worlds():
    """Worlds with no change at all (the personalized and null embeddings are other draws of the base's
    distribution): over 40 seeded worlds and 3 aspects, CHANGED is rare, as the 95% null quantile and the joint fit's
    own null promise. A null without its random swaps, or thresholds at 0, call most of them changed."""
    flags = []
    for seed in range(40):
        rng, bank, directions, base = _world(seed=seed, n=48)
        tuned, null_base = rng.normal(size=base.shape), rng.normal(size=base.shape)
        res = decompose_divergence(base, tuned, directions, "finexl", null_base=null_base, n_bootstrap=40, n_null=40,
                                   seed=seed)  # fmt: skip
        flags.extend(a.changed for a in res.aspects)
    assert len(flags) == 120 and np.mean(flags) <= 0.05


def test_the_null_swaps_each_pair_at_random():
    """The null fits the base against itself with each pair's two images swapped at random: its signed row scores
    vary from draw to draw and centre on zero (a swap flips a pair's sign), whatever the fixed difference is."""
    from finexl.explanation.decompose import make_estimator
    from finexl.explanation.scoring import null_row_scores

    rng, bank, directions, base = _world(seed=1, n=64)
    design = directions.design("axes")
    null_base = base + 0.5 + rng.normal(size=base.shape) * 0.1  # other seeds that differ systematically
    spread = spreads(np.concatenate([base, null_base]), design.rows)
    scores, joint = null_row_scores(make_estimator("finexl"), design, base, null_base, spread, n_null=200, seed=0)
    assert scores.shape == (200, len(design.rows)) and joint.shape == scores.shape
    assert (scores.std(axis=0) > 0).all()
    # without swaps every draw would be the same large one-signed move; with them it centres on zero
    fixed = decompose_divergence(base, null_base, directions, "finexl", n_bootstrap=10).aspects
    assert max(a.score for a in fixed) > 0.2
    two = design.two_sided  # antonym axes take either sign (a value without an antonym only moves toward itself)
    assert two.sum() == 2 and (np.abs(scores[:, two].mean(axis=0)) < 0.3 * scores[:, two].std(axis=0)).all()


def test_the_thresholds_are_the_null_quantiles_of_both_fits():
    from finexl.explanation.decompose import make_estimator
    from finexl.explanation.scoring import null_row_scores

    rng, bank, directions, base = _world(seed=2, n=48)
    tuned, null_base = base + rng.normal(size=base.shape) * 0.2, rng.normal(size=base.shape)
    res = decompose_divergence(base, tuned, directions, "finexl", null_base=null_base, n_bootstrap=30, n_null=60,
                               null_quantile=0.9, seed=5)  # fmt: skip
    design = directions.design("axes")
    spread = spreads(np.concatenate([base, tuned]), design.rows)
    null, joint = null_row_scores(make_estimator("finexl"), design, base, null_base, spread, 60, seed=6)  # seed + 1
    expected = np.quantile(aggregate(null, design, bank).aspect, 0.9, axis=0)
    expected_joint = np.quantile(aggregate(joint, design, bank).aspect, 0.9, axis=0)
    by = {a.aspect: a for a in res.aspects}
    for i, name in enumerate(bank.aspects):
        assert by[name].threshold == pytest.approx(expected[i]) and by[name].threshold > 0
        assert by[name].joint_threshold == pytest.approx(expected_joint[i])


def test_with_nothing_changed_an_aspect_above_its_null_is_accounted_for_by_nothing():
    from finexl.explanation.result import accounted_text
    from finexl.explanation.scoring import accounted_for

    _, bank, directions, base = _world(seed=0)
    design = directions.design("axes")
    point = np.full(len(design.rows), 0.2)
    agg = aggregate(point, design, bank)
    none = np.zeros(len(bank.aspects), dtype=bool)
    out = accounted_for(point, point, agg, design, bank, np.ones(len(design.rows)), none, ~none)
    assert out == {a: {} for a in bank.aspects}
    assert accounted_text({"accounted_for": {}, "score": 0.2}) == "no CHANGED aspect accounts for it"


def test_the_accounted_share_never_reads_as_more_than_the_score():
    from finexl.explanation.result import accounted_text

    assert accounted_text({"accounted_for": {"colour": 0.1}, "score": 0.21}) == "colour accounts for 0.10 of its 0.21"
    assert accounted_text({"accounted_for": {"colour": 0.06, "fill": 0.02}, "score": 0.15}) == (
        "colour and fill account for 0.08 of its 0.15 (0.06, 0.02)"
    )
    # the CHANGED aspects' change seen along it exceeds its own score: all of it, and by how much they move it
    assert accounted_text({"accounted_for": {"colour": 0.24, "shape": 0.14}, "score": 0.33}) == (
        "colour and shape account for all of its 0.33 (the change along it: 0.38 = 0.24 + 0.14)"
    )
    assert accounted_text({"accounted_for": {"shape": 0.16}, "score": 0.14}) == (
        "shape accounts for all of its 0.14 (the change along it: 0.16)"
    )
