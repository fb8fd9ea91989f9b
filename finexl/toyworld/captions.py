"""Captions of toy-world images: a random subset of the true aspect values, in varied words.

``caption(aspects, rng)`` returns the text and the list of ``(aspect, value, phrase)`` it mentions, so that
truthfulness can be checked: every phrase names the true value of its aspect (for graded aspects, the true band).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finexl.toyworld.aspects import CATEGORICAL_BY_NAME, GRADED, GRADED_BY_NAME, Aspects, level_band

# Probability that a caption mentions each aspect (graded aspects only when outside the middle band).
MENTION_PROBABILITY = {
    "shape": 0.75,
    "colour": 0.6,
    "pose": 0.5,
    "position": 0.5,
    "fill": 0.5,
    "background": 0.5,
    "pattern": 0.5,
    "size": 0.5,
    "blur": 0.5,
    "grain": 0.5,
    "saturation": 0.5,
    "brightness": 0.5,
}
SINGLE_ASPECT_PROBABILITY = 0.15  # some captions name one aspect only, which helps zero-shot prompts
NOUNS_WITHOUT_SHAPE = ("shape", "object", "figure", "thing")
OPENERS = ("a", "a picture of a", "an image of a", "a drawing of a", "a photo of a")


@dataclass(frozen=True)
class Mention:
    aspect: str
    value: str  # categorical value, or "low"/"high" for a graded aspect
    phrase: str


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def phrase_for(aspect: str, value: str, rng: np.random.Generator) -> str:
    """A phrase naming ``value`` (categorical) or band ``"low"``/``"high"`` (graded) of ``aspect``."""
    if aspect in CATEGORICAL_BY_NAME:
        return _pick(rng, CATEGORICAL_BY_NAME[aspect].words[value])
    graded = GRADED_BY_NAME[aspect]
    return _pick(rng, graded.low_words if value == "low" else graded.high_words)


def compose(mentioned: dict[str, str], rng: np.random.Generator) -> tuple[str, list[Mention]]:
    """Build a caption from ``{aspect: value}`` (graded aspects as ``"low"``/``"high"``)."""
    mentions = [Mention(a, v, phrase_for(a, v, rng)) for a, v in mentioned.items()]
    by = {m.aspect: m.phrase for m in mentions}

    # Noun phrase: [size] [saturation] [brightness] [colour] [fill] shape, in a fixed order.
    adjectives = [by[a] for a in ("size", "saturation", "brightness", "colour", "fill") if a in by]
    noun = by.get("shape", _pick(rng, NOUNS_WITHOUT_SHAPE))
    parts = [_pick(rng, OPENERS), *adjectives, noun]
    if "pose" in by:
        parts.append(", " + by["pose"] + "," if rng.random() < 0.3 else by["pose"])
    if "position" in by:
        parts.append(by["position"])
    if "background" in by or "pattern" in by:
        bg_words = [by[a] for a in ("background", "pattern") if a in by]
        parts.append("on a " + " ".join(bg_words) + " background")
    style = [by[a] for a in ("blur", "grain") if a in by]
    text = " ".join(parts).replace(" ,", ",").rstrip(",")
    if style:
        text += ", " + " and ".join(style)
    return text, mentions


def caption(
    aspects: Aspects, rng: np.random.Generator, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> tuple[str, list[Mention]]:
    """A caption naming a random subset of the true aspect values of ``aspects``.

    Args:
        aspects: the true values.
        rng: a ``numpy.random.Generator``.
        include: aspects the caption must name (when their value can be named: graded ones only outside the
            middle band).
        exclude: aspects the caption must not name (a personalization's shifted aspects).

    Returns:
        ``(text, mentions)``.
    """
    truth: dict[str, str] = {}
    for name in CATEGORICAL_BY_NAME:
        truth[name] = getattr(aspects, name)
    for graded in GRADED:
        band = level_band(getattr(aspects, graded.name))
        if band is not None:
            truth[graded.name] = band
    for name in exclude:
        truth.pop(name, None)
    if rng.random() < SINGLE_ASPECT_PROBABILITY and truth:
        names = sorted(truth)
        chosen = [names[int(rng.integers(len(names)))]]
    else:
        chosen = [a for a in truth if rng.random() < MENTION_PROBABILITY[a]]
    chosen += [a for a in include if a in truth and a not in chosen]
    return compose({a: truth[a] for a in chosen}, rng)


def is_true_of(mentions: list[Mention], aspects: Aspects) -> bool:
    """Whether every mention names the value (categorical) or band (graded) that ``aspects`` really has."""
    for m in mentions:
        actual = getattr(aspects, m.aspect)
        if (level_band(actual) if m.aspect in GRADED_BY_NAME else actual) != m.value:
            return False
    return True


def prompt_for(aspect: str, value: str) -> str:
    """A deterministic prompt that names only one aspect value, with its canonical phrase (zero-shot, adherence)."""
    text, _ = compose({aspect: value}, _CanonicalRng())
    return text


class _CanonicalRng:
    """Stands in for a Generator and always picks the first option: canonical phrases, plain opener."""

    def integers(self, n: int) -> int:
        return 0

    def random(self) -> float:
        return 1.0
