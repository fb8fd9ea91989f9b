import pytest

from finexl.toyworld.aspects import CATEGORICAL_BY_NAME
from finexl.toyworld.captions import NOUNS_WITHOUT_SHAPE
from finexl.toyworld.evaluate import NEUTRAL_PROMPTS, adherence_prompts, format_table, normalized_entropy


def test_normalized_entropy_bounds():
    assert normalized_entropy(["a"] * 10, 4) == pytest.approx(0.0)
    assert normalized_entropy(["a", "b", "c", "d"] * 5, 4) == pytest.approx(1.0)
    assert 0.4 < normalized_entropy(["a"] * 5 + ["b"] * 5, 4) < 0.6


def test_adherence_prompts_name_the_value_and_are_reproducible():
    prompts = adherence_prompts("position", "left", 30, seed=1)
    assert prompts == adherence_prompts("position", "left", 30, seed=1)
    words = CATEGORICAL_BY_NAME["position"].words["left"]
    assert all(any(w in p for w in words) for p in prompts)
    others = [w for v, ws in CATEGORICAL_BY_NAME["position"].words.items() if v != "left" for w in ws]
    assert not any(w in p for p in prompts for w in others)
    assert len(set(prompts)) > 10


def test_neutral_prompts_name_no_aspect():
    every_phrase = [w for a in CATEGORICAL_BY_NAME.values() for ws in a.words.values() for w in ws]
    for prompt in NEUTRAL_PROMPTS:
        assert any(prompt.endswith(n) for n in NOUNS_WITHOUT_SHAPE)
        assert not any(f" {w}" in prompt for w in every_phrase), prompt


def test_format_table_has_a_row_per_aspect():
    result = {"clip_zero_shot": {"shape": 0.5, "colour": 1.0}, "judge": {"shape": 0.9, "mae_blur": 0.05}}
    table = format_table(result)
    assert "| shape | 0.900 | 0.500 |" in table
    assert "| blur | MAE 0.050 |  |" in table
