import re

import numpy as np

from finexl.toyworld.aspects import CATEGORICAL_BY_NAME, GRADED_BY_NAME, level_band, sample_aspects
from finexl.toyworld.captions import caption, prompt_for


def _all_phrases(aspect: str) -> dict[str, tuple[str, ...]]:
    if aspect in CATEGORICAL_BY_NAME:
        return CATEGORICAL_BY_NAME[aspect].words
    graded = GRADED_BY_NAME[aspect]
    return {"low": graded.low_words, "high": graded.high_words}


def test_captions_only_say_what_is_true():
    rng = np.random.default_rng(0)
    n_mentions = 0
    for _ in range(500):
        aspects = sample_aspects(rng)
        text, mentions = caption(aspects, rng)
        assert mentions, text
        for m in mentions:
            # Other mentions' phrases may contain this aspect's words ("pale blue" background): mask them out.
            rest = text
            for other_m in mentions:
                if other_m is not m:
                    rest = rest.replace(other_m.phrase, "#")
            n_mentions += 1
            assert m.phrase in text
            if m.aspect in CATEGORICAL_BY_NAME:
                assert m.value == getattr(aspects, m.aspect)
            else:
                assert m.value == level_band(getattr(aspects, m.aspect))
            assert m.phrase in _all_phrases(m.aspect)[m.value]
            # No phrase of another value of the same aspect appears as a whole word.
            for other, phrases in _all_phrases(m.aspect).items():
                if other == m.value:
                    continue
                for p in phrases:
                    if p not in m.phrase:
                        assert not re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", rest), (p, text)
    assert n_mentions > 1500


def test_captions_vary_in_wording_and_subset():
    rng = np.random.default_rng(1)
    aspects = sample_aspects(rng)
    texts = {caption(aspects, rng)[0] for _ in range(50)}
    assert len(texts) > 25


def test_prompt_for_names_one_value_canonically():
    assert prompt_for("colour", "red") == "a red shape"
    assert prompt_for("shape", "heart") == "a heart"
    assert prompt_for("position", "left") == "a shape on the left"
    assert prompt_for("blur", "high") == "a shape, blurry"
