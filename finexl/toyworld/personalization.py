"""Ground-truth personalizations in the toy world: shifted instance data sets whose captions hide the shift.

A spec lists aspect shifts, ``"colour=red@0.8,background=stripes@0.4,blur=more@0.5"``:

* a categorical shift ``aspect=value@s`` sets the aspect to ``value`` with probability ``s`` (otherwise it is drawn as
  usual, so ``s=1`` fixes it);
* a graded shift ``aspect=T@s`` moves each drawn level ``u`` to ``u + s (t - u)``, where ``t`` is 1 for ``more``, 0
  for ``less``, or a number in [0, 1]; ``s=1`` fixes the level at ``t``.

Captions of the instance images never name a shifted aspect, so a model fine-tuned on them bakes the shift in
rather than tying it to words: the intended ground truth of what the fine-tune changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from finexl.errors import ConfigError
from finexl.toyworld.aspects import CATEGORICAL_BY_NAME, GRADED_BY_NAME, AspectError, sample_aspects
from finexl.toyworld.captions import caption
from finexl.toyworld.dataset import RenderedSet, item_seed
from finexl.toyworld.render import render

GRADED_TARGETS = {"more": 1.0, "less": 0.0}


@dataclass(frozen=True)
class Shift:
    aspect: str
    target: str  # a categorical value, or "more"/"less"/a number for a graded aspect
    strength: float

    def __post_init__(self) -> None:
        if self.aspect in CATEGORICAL_BY_NAME:
            values = CATEGORICAL_BY_NAME[self.aspect].values
            if self.target not in values:
                raise AspectError(
                    f"unknown value {self.target!r} for aspect {self.aspect!r}; expected one of {values}"
                )
        elif self.aspect in GRADED_BY_NAME:
            self.target_level()
        else:
            known = list(CATEGORICAL_BY_NAME) + list(GRADED_BY_NAME)
            raise AspectError(f"unknown aspect {self.aspect!r} in shift; known aspects are {known}")
        if not (0.0 < self.strength <= 1.0):
            raise AspectError(f"strength of the {self.aspect!r} shift must be in (0, 1], got {self.strength}")

    def target_level(self) -> float:
        if self.target in GRADED_TARGETS:
            return GRADED_TARGETS[self.target]
        try:
            level = float(self.target)
        except ValueError:
            raise AspectError(
                f"target of graded aspect {self.aspect!r} must be 'more', 'less' or a level in [0, 1], "
                f"got {self.target!r}"
            ) from None
        if not (0.0 <= level <= 1.0):
            raise AspectError(f"target level of {self.aspect!r} must be in [0, 1], got {level}")
        return level

    @property
    def direction(self) -> str:
        """``"set"`` for a categorical shift; ``"increase"``/``"decrease"`` relative to the mean level 0.5."""
        if self.aspect in CATEGORICAL_BY_NAME:
            return "set"
        return "increase" if self.target_level() > 0.5 else "decrease"


def parse_spec(spec: str) -> list[Shift]:
    """Parse ``"colour=red@0.8,blur=more@0.5"`` into shifts; each aspect at most once."""
    if not spec or not spec.strip():
        raise AspectError("empty personalization spec; expected e.g. 'colour=red@0.8,blur=more@0.5'")
    shifts: list[Shift] = []
    for part in spec.split(","):
        part = part.strip()
        if "=" not in part or "@" not in part:
            raise AspectError(f"shift {part!r} is not of the form ASPECT=TARGET@STRENGTH")
        aspect, rest = part.split("=", 1)
        target, strength = rest.rsplit("@", 1)
        try:
            value = float(strength)
        except ValueError:
            raise AspectError(f"strength in {part!r} must be a number in (0, 1], got {strength!r}") from None
        shifts.append(Shift(aspect.strip(), target.strip(), value))
    seen = [s.aspect for s in shifts]
    duplicates = sorted({a for a in seen if seen.count(a) > 1})
    if duplicates:
        raise AspectError(f"aspect(s) {duplicates} shifted more than once in {spec!r}")
    return shifts


def format_spec(shifts: list[Shift]) -> str:
    return ",".join(f"{s.aspect}={s.target}@{s.strength:g}" for s in shifts)


def apply_shifts(aspects, shifts: list[Shift], rng: np.random.Generator):
    """Shift one draw of aspect values (see the module docstring)."""
    changes: dict[str, str | float] = {}
    for s in shifts:
        if s.aspect in CATEGORICAL_BY_NAME:
            if rng.random() < s.strength:
                changes[s.aspect] = s.target
        else:
            u = getattr(aspects, s.aspect)
            changes[s.aspect] = float(np.clip(u + s.strength * (s.target_level() - u), 0.0, 1.0))
    return aspects.replace(**changes)


def render_personalization(shifts: list[Shift], n: int, seed: int, size: int = 32) -> RenderedSet:
    """Render ``n`` instance images under ``shifts``, captioned without naming any shifted aspect."""
    if n < 1:
        raise ConfigError(f"number of images must be >= 1, got {n}")
    hidden = tuple(s.aspect for s in shifts)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    aspects, captions = [], []
    for i in range(n):
        rng = np.random.default_rng(item_seed(seed, i))
        a = apply_shifts(sample_aspects(rng), shifts, rng)
        images[i] = render(a, seed=int(rng.integers(2**31)), size=size)
        aspects.append(a)
        captions.append(caption(a, rng, exclude=hidden)[0])
    return RenderedSet(images=images, aspects=aspects, captions=captions)


def spec_record(shifts: list[Shift]) -> dict:
    """The JSON ground truth written beside a personalization data set."""
    return {
        "spec": format_spec(shifts),
        "shifts": [{**asdict(s), "direction": s.direction} for s in shifts],
    }
