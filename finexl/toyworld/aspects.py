"""The aspects of the toy world: what an image can vary in, and the words used for each value.

Two kinds of aspect:

* categorical aspects take one of a fixed list of values (``shape``, ``colour``, ...);
* graded aspects take a continuous level in ``[0, 1]`` (``size``, ``blur``, ...). In words, a graded aspect is
  named only when its level is clearly low (``< LOW_MAX``) or clearly high (``> HIGH_MIN``); the middle band is
  never captioned, so a caption word is never ambiguous about the level.

Some words are deliberately close across aspects (``vivid``/``bright``, ``soft``/``smooth``, ``blurry``/``hazy``)
and some aspects interact in pixels (brightening mixes towards white, which lowers saturation; blur removes grain),
so that decomposing a change onto aspect directions is not trivially easy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from finexl.errors import ConfigError

LOW_MAX = 0.35
HIGH_MIN = 0.65


@dataclass(frozen=True)
class CategoricalAspect:
    name: str
    values: tuple[str, ...]
    # value -> the phrases that name it in a caption (first one is the canonical phrase)
    words: dict[str, tuple[str, ...]]
    group: str  # coarse family used when explanations are grouped (subject, colour, pose, ...)


@dataclass(frozen=True)
class GradedAspect:
    name: str
    low_words: tuple[str, ...]
    high_words: tuple[str, ...]
    group: str


CATEGORICAL: tuple[CategoricalAspect, ...] = (
    CategoricalAspect(
        name="shape",
        values=("triangle", "heart", "arrow", "house", "moon"),
        words={
            "triangle": ("triangle",),
            "heart": ("heart",),
            "arrow": ("arrow",),
            "house": ("house", "little house"),
            "moon": ("crescent moon", "crescent", "moon"),
        },
        group="subject",
    ),
    CategoricalAspect(
        name="colour",
        values=("red", "orange", "yellow", "green", "blue", "purple"),
        words={
            "red": ("red", "scarlet"),
            "orange": ("orange",),
            "yellow": ("yellow", "golden"),
            "green": ("green", "emerald"),
            "blue": ("blue", "cobalt"),
            "purple": ("purple", "violet"),
        },
        group="colour",
    ),
    CategoricalAspect(
        name="pose",
        values=("upright", "upside-down", "left", "right"),
        words={
            "upright": ("upright", "standing upright"),
            "upside-down": ("upside-down", "flipped upside-down"),
            "left": ("turned left", "facing left", "lying on its left side"),
            "right": ("turned right", "facing right", "lying on its right side"),
        },
        group="pose",
    ),
    CategoricalAspect(
        name="position",
        values=("centre", "left", "right", "top", "bottom"),
        words={
            "centre": ("in the centre", "in the middle"),
            "left": ("on the left", "at the left edge"),
            "right": ("on the right", "at the right edge"),
            "top": ("at the top", "near the top"),
            "bottom": ("at the bottom", "near the bottom"),
        },
        group="composition",
    ),
    CategoricalAspect(
        name="fill",
        values=("filled", "outline"),
        words={"filled": ("filled", "solid"), "outline": ("outlined", "hollow", "line-drawn")},
        group="style",
    ),
    CategoricalAspect(
        name="background",
        values=("white", "grey", "beige", "sky", "mint", "black"),
        words={
            "white": ("white",),
            "grey": ("grey", "gray"),
            "beige": ("beige", "sandy"),
            "sky": ("sky-blue", "pale blue"),
            "mint": ("mint", "pale green"),
            "black": ("black", "dark"),
        },
        group="background",
    ),
    CategoricalAspect(
        name="pattern",
        values=("plain", "stripes", "dots", "checks", "gradient"),
        words={
            "plain": ("plain", "flat"),
            "stripes": ("striped", "stripy"),
            "dots": ("dotted", "polka-dot", "spotted"),
            "checks": ("checkered", "chequered"),
            "gradient": ("gradient", "fading"),
        },
        group="background",
    ),
)

GRADED: tuple[GradedAspect, ...] = (
    GradedAspect("size", low_words=("small", "tiny"), high_words=("large", "big"), group="composition"),
    GradedAspect("blur", low_words=("sharp", "crisp"), high_words=("blurry", "out-of-focus", "hazy"), group="style"),
    GradedAspect("grain", low_words=("clean", "smooth"), high_words=("grainy", "noisy", "speckled"), group="style"),
    GradedAspect(
        "saturation", low_words=("muted", "washed-out", "dull"), high_words=("vivid", "vibrant"), group="style"
    ),
    GradedAspect("brightness", low_words=("dark", "dim"), high_words=("bright", "brightly lit"), group="lighting"),
)

CATEGORICAL_BY_NAME = {a.name: a for a in CATEGORICAL}
GRADED_BY_NAME = {a.name: a for a in GRADED}
ASPECT_NAMES: tuple[str, ...] = tuple(CATEGORICAL_BY_NAME) + tuple(GRADED_BY_NAME)


class AspectError(ConfigError):
    """An unknown aspect name or value, or a level outside ``[0, 1]``."""


@dataclass(frozen=True)
class Aspects:
    """The exact aspect values of one toy-world image."""

    shape: str = "triangle"
    colour: str = "red"
    pose: str = "upright"
    position: str = "centre"
    fill: str = "filled"
    background: str = "white"
    pattern: str = "plain"
    size: float = 0.5
    blur: float = 0.0
    grain: float = 0.0
    saturation: float = 0.7
    brightness: float = 0.5

    def __post_init__(self) -> None:
        for name in ASPECT_NAMES:
            validate_aspect_value(name, getattr(self, name))

    def to_dict(self) -> dict[str, str | float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Aspects:
        unknown = sorted(set(values) - set(ASPECT_NAMES))
        if unknown:
            raise AspectError(f"unknown aspect name(s) {unknown}; known aspects are {list(ASPECT_NAMES)}")
        return cls(**values)

    def replace(self, **changes) -> Aspects:
        return Aspects.from_dict({**self.to_dict(), **changes})


def validate_aspect_value(name: str, value: str | float) -> None:
    """Raise :class:`AspectError` unless ``value`` is a valid value (categorical) or level (graded) of ``name``."""
    if name in CATEGORICAL_BY_NAME:
        if value not in CATEGORICAL_BY_NAME[name].values:
            raise AspectError(
                f"unknown value {value!r} for aspect {name!r}; expected one of {CATEGORICAL_BY_NAME[name].values}"
            )
    elif name in GRADED_BY_NAME:
        if not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
            raise AspectError(f"level of aspect {name!r} must be in [0, 1], got {value!r}")
    else:
        raise AspectError(f"unknown aspect {name!r}; known aspects are {list(ASPECT_NAMES)}")


def sample_aspects(rng, **fixed) -> Aspects:
    """Draw aspect values uniformly (categorical) and uniformly in ``[0, 1]`` (graded), except those in ``fixed``.

    Args:
        rng: a ``numpy.random.Generator``.
        **fixed: aspect values to hold fixed, validated.
    """
    values: dict[str, str | float] = {}
    for aspect in CATEGORICAL:
        values[aspect.name] = aspect.values[int(rng.integers(len(aspect.values)))]
    for aspect in GRADED:
        values[aspect.name] = float(rng.random())
    for name, value in fixed.items():
        validate_aspect_value(name, value)
        values[name] = value
    return Aspects(**values)


def level_band(level: float) -> str | None:
    """``"low"``, ``"high"`` or ``None`` (the middle band that captions never name)."""
    if level < LOW_MAX:
        return "low"
    if level > HIGH_MIN:
        return "high"
    return None
