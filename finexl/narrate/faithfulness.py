"""Check that sentences say what the scores say, and nothing more.

Rules, applied to each sentence (a line, or a '.'-separated part of one):

* every aspect a sentence names must be an aspect of the explanation: a changed one, or an unchanged one that the
  sentence calls unchanged; a line of the form ``NAME: ...`` whose NAME is no aspect, and aspect-like nouns
  (lighting, texture, ...) that are neither an aspect nor the group of a changed aspect, are invented;
  sentences are lines, split further at '. ' and ';';
* a changed aspect must come with its level band (slight / moderate / strong, or their adverbs) and no other band,
  and with no word of the opposite direction ("less" for an increase, "more" for a decrease unless it points
  toward the antonym);
* every number near an aspect (0.47, 47 %) must lie in that aspect's interval (or be its null threshold), so
  "about 0.9" for a score of 0.47 [0.43, 0.55] fails;
* every changed aspect must be named somewhere (no significant aspect dropped);
* a word of an unchanged aspect's concepts, in any form ("blurrier", "darker", "hearts", "watercolour"), is a claim
  that the aspect changed unless the sentence calls it unchanged; words the changed aspects' concepts use too are
  left to them;
* a sentence about a changed aspect must not negate it ("not", "no longer", "never", "hardly", ...) or call it
  unchanged, and must not point the other way ("away from scarlet", "less solid" for a change toward solid).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from finexl.narrate.templates import band

BAND_WORDS = {
    "slight": ("slight", "slightly", "subtle", "subtly", "mild", "mildly", "a little", "a bit"),
    "moderate": ("moderate", "moderately", "noticeable", "noticeably", "medium"),
    "strong": (
        "strong",
        "strongly",
        "substantial",
        "substantially",
        "dramatic",
        "dramatically",
        "marked",
        "markedly",
        "major",
        "heavily",
        "large shift",
    ),
}
INCREASE_WORDS = ("more", "increase", "increases", "increased", "higher", "greater", "stronger", "toward", "towards")
DECREASE_WORDS = (
    "less",
    "decrease",
    "decreases",
    "decreased",
    "reduced",
    "reduces",
    "lower",
    "fewer",
    "weaker",
    "away from",
    "fade",
    "fades",
    "faded",
    "lose",
    "loses",
    "lost",
    "drop",
    "drops",
    "declines",
)
NEGATIONS = ("not", "no", "no longer", "never", "hardly", "barely", "neither", "nor", "none")
FUNCTION_WORDS = {"a", "an", "the", "on", "of", "in", "at", "its", "it", "to", "by", "with", "and", "made", "for"}
UNCHANGED_WORDS = (
    "unchanged",
    "no change",
    "not change",
    "no significant",
    "stays the same",
    "remains the same",
    "stay the same",
    "remain the same",
    "remain unchanged",
    "stay unchanged",
    "does not change",
    "doesn't change",
    "did not change",
    "not changed",
)
GENERIC_LABELS = {"changed", "summary", "note", "unchanged", "in short", "overall"}
ASPECT_NOUNS = (
    "pose",
    "style",
    "background",
    "colour",
    "lighting",
    "texture",
    "composition",
    "size",
    "shape",
    "blur",
    "brightness",
    "saturation",
    "contrast",
    "mood",
    "medium",
    "palette",
    "subject",
    "framing",
    "pattern",
    "grain",
    "position",
    "material",
    "weather",
    "fill",
    "sharpness",
    "hue",
)


@dataclass
class FaithfulnessReport:
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _norm(text: str) -> str:
    text = text.lower().replace("color", "colour").replace("\u2019", "'")
    return re.sub(r"[\s_]+", " ", text)


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text) is not None


def _units(text: str) -> list[str]:
    units = []
    for line in text.splitlines():
        line = line.strip().lstrip("-*\u2022 ").strip()
        if line:
            units.extend(u.strip() for u in re.split(r"(?<=[a-z\)])\.\s+|;", line) if u.strip())
    return units


def _numbers(unit: str) -> list[float]:
    out = []
    for match in re.finditer(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(%|percent)?", unit):
        value = float(match.group(1))
        if match.group(2):
            value /= 100
        out.append(value)
    return out


def _forms(word: str) -> set[str]:
    """A word and its plural, comparative and adverb forms ("blurry" -> "blurrier", "big" -> "bigger")."""
    forms = {word, word + "s", word + "es", word + "ly", word + "ness"}
    if word.endswith("y"):
        forms |= {word[:-1] + "ier", word[:-1] + "ily", word[:-1] + "ies"}
    elif word.endswith("e"):
        forms |= {word + "r", word + "d"}
    else:
        forms |= {word + "er", word + "ed", word + word[-1] + "er"}
    return forms  # superlatives are left out: "the largest change" says nothing about size


def _concept_words(expl: dict) -> dict[str, set[str]]:
    """Every form of every content word of each aspect's concepts and antonyms: word -> aspects using it."""
    out: dict[str, set[str]] = {}
    for c in expl.get("concepts") or []:
        for phrase in (c.get("phrase"), c.get("antonym")):
            for word in re.findall(r"[\w-]+", _norm(phrase or "")):
                if word in FUNCTION_WORDS or len(word) < 2:
                    continue
                for form in _forms(word) | ({word.replace("-", " ")} if "-" in word else set()):
                    out.setdefault(form, set()).add(_norm(c["aspect"]))
    return out


def _negated(low: str) -> bool:
    return any(_has(low, w) for w in NEGATIONS) or re.search(r"\w+n't\b", low) is not None


@dataclass
class _Unit:
    """One sentence as the rules read it: its text (lower case), the aspects it names, whether it calls them
    unchanged, its ``NAME:`` label and the labels it may use."""

    low: str
    names: list[str]
    says_unchanged: bool
    label: str | None
    allowed: set[str]


def _read(text: str, expl: dict) -> list[_Unit]:
    """Every sentence of ``text`` with the aspects of ``expl`` it names (by name, by a changed aspect's concept
    phrase, or by a word of an unchanged aspect's concepts in any form)."""
    aspects = {_norm(a["aspect"]): a for a in expl["aspects"]}
    changed = {name: a for name, a in aspects.items() if a["changed"]}
    changed_groups = {_norm(a["group"]) for a in changed.values()}
    all_groups = {_norm(a["group"]) for a in aspects.values()}
    words = _concept_words(expl)
    out = []
    for unit in _units(text):
        low = _norm(unit)
        prefix = re.match(r"^([\w\- ]{1,40}):", low)
        says_unchanged = any(w in low for w in UNCHANGED_WORDS)
        allowed = set(aspects) | changed_groups | GENERIC_LABELS | (all_groups if says_unchanged else set())
        names = [n for n in aspects if _has(low, n)]
        for a in changed.values():  # a concept phrase names its aspect too
            for phrase in (a.get("concept"), a.get("toward")):
                if phrase and _norm(a["aspect"]) not in names and _has(low, _norm(phrase)):
                    names.append(_norm(a["aspect"]))
        for word, owners in words.items():  # "blurrier", "darker": the concepts of unchanged aspects, in any form
            if owners & set(changed) or not _has(low, word):
                continue
            for owner in sorted(owners):
                if owner not in names:
                    names.append(owner)
        out.append(_Unit(low, names, says_unchanged, prefix.group(1).strip() if prefix else None, allowed))
    return out


def check(text: str, expl: dict) -> FaithfulnessReport:
    """Problems with ``text`` as a rendering of explanation ``expl`` (empty when faithful)."""
    report = FaithfulnessReport()
    if not text or not text.strip():
        report.problems.append("the text is empty")
        return report
    aspects = {_norm(a["aspect"]): a for a in expl["aspects"]}
    changed = {name: a for name, a in aspects.items() if a["changed"]}
    mentioned: set[str] = set()
    for unit in _read(text, expl):
        if unit.label and unit.label not in unit.allowed:
            report.problems.append(f"names {unit.label!r}, which is not an aspect of the explanation")
        for noun in ASPECT_NOUNS:
            if _has(unit.low, noun) and noun not in unit.allowed:
                report.problems.append(f"names {noun!r}, which is not an aspect of the explanation")
        for name in unit.names:
            a = aspects[name]
            if not a["changed"]:
                if not unit.says_unchanged:
                    report.problems.append(f"says {a['aspect']!r} changed, but its change is not significant")
                continue
            mentioned.add(name)
            if unit.says_unchanged or _negated(unit.low):
                report.problems.append(f"negates or denies {a['aspect']!r}, a significant change")
                continue
            _check_changed(unit.low, a, report)
    for name, a in changed.items():
        if name not in mentioned:
            report.problems.append(f"drops {a['aspect']!r}, a significant change ({band(a['score'])})")
    return report


@dataclass(frozen=True)
class Claim:
    """What a sentence says of an aspect: ``direction`` ("increase", "decrease" or "none") and ``level`` (1 slight,
    2 moderate, 3 strong; 0 for "unchanged"; None when a change is claimed with no level)."""

    direction: str
    level: int | None


LEVELS = {"slight": 1, "moderate": 2, "strong": 3}


def claims(text: str, expl: dict) -> dict[str, Claim]:
    """What ``text`` claims of each aspect of ``expl`` it names, read with the rules of :func:`check`: a sentence
    that calls an aspect unchanged or negates it claims no change; otherwise its band words give the level and its
    direction words (or the antonym it points to) the direction. Aspects it does not name are absent."""
    aspects = {_norm(a["aspect"]): a for a in expl["aspects"]}
    out: dict[str, Claim] = {}
    for unit in _read(text or "", expl):
        for name in unit.names:
            a = aspects[name]
            if unit.says_unchanged or _negated(unit.low):
                out.setdefault(a["aspect"], Claim("none", 0))
                continue
            bands = [b for b, words in BAND_WORDS.items() if any(_has(unit.low, w) for w in words)]
            level = max((LEVELS[b] for b in bands), default=None)
            up = any(_has(unit.low, w) for w in INCREASE_WORDS if w not in ("toward", "towards"))
            down = any(_has(unit.low, w) for w in DECREASE_WORDS)
            toward = _norm(a.get("toward") or "")
            antonym = bool(toward) and toward != _norm(a.get("concept") or "") and _has(unit.low, toward)
            to_antonym = antonym and not _has(unit.low, f"less {toward}")
            direction = "decrease" if to_antonym or (down and not up) else "increase"
            out[a["aspect"]] = Claim(direction, level)
    return out


def _check_changed(low: str, a: dict, report: FaithfulnessReport) -> None:
    expected = band(a["score"])
    bands = {b for b, words in BAND_WORDS.items() if any(_has(low, w) for w in words)}
    if not bands:
        report.problems.append(f"gives no level for {a['aspect']!r} (expected {expected})")
    elif bands != {expected}:
        report.problems.append(f"gives {a['aspect']!r} the level {'/'.join(sorted(bands))}, expected {expected}")
    has_up = any(_has(low, w) for w in INCREASE_WORDS)
    has_down = any(_has(low, w) for w in DECREASE_WORDS)
    if a["direction"] == "increase" and has_down and not has_up:
        report.problems.append(f"says {a['aspect']!r} decreased; it increased (toward {a['toward']})")
    if a["direction"] == "increase" and (_has(low, "away from") or _has(low, f"from {_norm(a['concept'])}")):
        report.problems.append(f"says {a['aspect']!r} moved away from {a['concept']}; it moved toward it")
    if a["direction"] == "decrease":
        toward = a.get("toward")
        points_to_antonym = bool(toward) and _has(low, _norm(toward)) and not _has(low, f"less {_norm(toward)}")
        if has_up and not has_down and not points_to_antonym:
            report.problems.append(f"says {a['aspect']!r} increased; it decreased (less {a['concept']})")
        names_concept = _has(low, _norm(a["concept"]))
        if _has(low, f"more {_norm(a['concept'])}"):
            report.problems.append(f"says {a['aspect']!r} moved toward {a['concept']}; it moved away from it")
        if toward and toward != a["concept"] and has_down and _has(low, _norm(toward)) and not names_concept:
            report.problems.append(f"says {a['aspect']!r} moved away from {toward}; it moved toward it")
    lo, hi = a["interval"]
    allowed = [a.get("threshold")] if a.get("threshold") is not None else []
    for x in _numbers(low):
        if x > 1.0 and x == int(x):
            continue  # counts ("3 aspects", "90% interval" is handled below)
        if abs(x - 0.9) < 1e-9 and ("interval" in low or "confidence" in low):
            continue  # the interval's level
        if not (lo - 0.011 <= x <= hi + 0.011 or any(abs(x - t) < 0.011 for t in allowed)):
            report.problems.append(f"gives {x:g} for {a['aspect']!r}, outside its interval [{lo:.2f}, {hi:.2f}]")
