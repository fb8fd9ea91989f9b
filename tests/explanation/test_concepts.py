"""Concept banks: validation with named errors, the shipped banks, designs and cached text directions."""

import json

import numpy as np
import pytest

from finexl.explanation.concepts import (
    ConceptBankError,
    ConceptDirections,
    compose,
    load_concept_bank,
    parse_concept_bank,
    text_directions,
)


def bank(aspects):
    return parse_concept_bank({"format": "finexl-concepts/1", "name": "t", "aspects": aspects})


def test_shipped_banks_load_and_real_bank_is_large_and_broad():
    toy = load_concept_bank("toy")
    assert {"colour", "pattern", "blur", "brightness", "pose", "position"} <= set(toy.aspects)
    real = load_concept_bank("real")
    assert len(real.phrases()) >= 300
    groups = {c.group for c in real.concepts}
    assert {"style", "colour", "lighting", "texture", "pose", "composition", "background", "subject"} <= groups


@pytest.mark.parametrize(
    "aspects, message",
    [
        ({"colour": {"concepts": ["red", "Red "]}}, "duplicate"),
        ({"colour": {"concepts": ["red"]}, "tint": {"concepts": [{"phrase": "blue", "antonym": "red"}]}}, "duplicate"),
        ({"colour": {"concepts": ["red", "  "]}}, "empty phrase"),
        ({"blur": {"concepts": [{"phrase": "blurry", "antonym": ""}]}}, "empty phrase"),
        ({"colour": {"concepts": []}}, "non-empty"),
        ({"colour": {"concepts": [{"phrase": "red", "opposite": "green"}]}}, r"concepts\[0\].*'opposite'"),
    ],
)
def test_bad_banks_are_named(aspects, message):
    with pytest.raises(ConceptBankError, match=message):
        bank(aspects)


def test_bank_files_that_are_not_utf8_or_json_are_named(tmp_path):
    (tmp_path / "latin1.json").write_bytes('{"aspects": {"c": {"concepts": ["caf\xe9"]}}}'.encode("latin-1"))
    with pytest.raises(ConceptBankError, match="not UTF-8"):
        load_concept_bank(tmp_path / "latin1.json")
    (tmp_path / "broken.json").write_text("{aspects:")
    with pytest.raises(ConceptBankError, match="not valid JSON"):
        load_concept_bank(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError):
        load_concept_bank(tmp_path / "missing.json")


def test_designs_follow_antonyms_and_centre_plain_values():
    b = bank({
        "colour": {"concepts": ["red", "blue", "green"]},
        "blur": {"concepts": [{"phrase": "blurry", "antonym": "sharp"}]},
    })  # fmt: skip
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(5, 8))
    d = ConceptDirections(b, b.phrases(), raw)
    r = d.design("raw")
    assert r.rows.shape == (5, 8) and list(r.polarity) == [1, 1, 1, 1, -1] and list(r.concept_index) == [0, 1, 2, 3, 3]
    a = d.design("axes")
    assert a.rows.shape == (4, 8)
    np.testing.assert_allclose(a.rows[0], raw[0] - raw[:3].mean(axis=0))
    np.testing.assert_allclose(a.rows[3], raw[3] - raw[4])  # blurry - sharp
    np.testing.assert_allclose(a.rows[:3].sum(axis=0), 0.0, atol=1e-12)


def test_text_directions_are_mean_prompt_differences_and_cached(tiny_clip_dir, tmp_path):
    from finexl.explanation.embed import TransformersCLIP

    emb = TransformersCLIP(tiny_clip_dir)
    b = bank({"colour": {"concepts": ["red", "blue"]}})
    prompts = ["a shape", "a picture of a thing", "a shape"]
    d = text_directions(emb, b, prompts, tmp_path)
    base = emb.embed_texts(["a shape", "a picture of a thing"])
    expected = (emb.embed_texts([compose(p, "red") for p in ["a shape", "a picture of a thing"]]) - base).mean(0)
    np.testing.assert_allclose(d.row("red"), expected, atol=1e-6)
    cached = list((tmp_path / "directions").glob("*.npz"))
    assert len(cached) == 1
    again = text_directions(emb, b, prompts, tmp_path)
    np.testing.assert_array_equal(again.raw, d.raw)
    np.testing.assert_allclose(again.anchors - again.neutral, d.raw, atol=1e-12)
    extended = b.extended("proposed", ["red", "striped"])
    assert extended.phrases() == ["red", "blue", "striped"]
    assert json.dumps(extended.digest()) != json.dumps(b.digest())
