"""Templated sentences from aspect scores: deterministic, and never saying more than the scores support.

Level bands of a changed aspect's score (its share of the images' own spread along the concept, see
:mod:`finexl.explanation.scoring`): ``slight`` below 0.2, ``moderate`` from 0.2 to 0.45, ``strong`` from 0.45. An
aspect whose interval does not clear the null threshold is ``unchanged`` and is only named when asked about.
"""

from __future__ import annotations

from finexl.errors import ConfigError

BANDS: tuple[tuple[str, float], ...] = (("slight", 0.0), ("moderate", 0.2), ("strong", 0.45))
ADVERBS = {"slight": "slightly", "moderate": "moderately", "strong": "strongly"}
FORMATS = ("summary", "bullets", "paragraph")


def band(score: float) -> str:
    name = BANDS[0][0]
    for label, low in BANDS:
        if score >= low:
            name = label
    return name


def _numbers(a: dict) -> str:
    lo, hi = a["interval"]
    return f"{a['score']:.2f}, interval {lo:.2f}-{hi:.2f}"


def change_phrase(a: dict) -> str:
    """``"strongly more scarlet"`` / ``"moderately less blurry (toward sharp)"``."""
    adverb = ADVERBS[band(a["score"])]
    if a["direction"] == "decrease":
        target = f"less {a['concept']}"
        if a.get("toward") and a["toward"] != target:
            target += f" (toward {a['toward']})"
    else:
        target = f"more {a['concept']}"
    return f"{adverb} {target}"


def aspect_sentence(a: dict) -> str:
    if not a["changed"]:
        threshold = a.get("threshold")
        if threshold is None:
            why = ""
        elif a["interval"][0] > threshold:  # above its null, but the joint fit does not need it (finexl)
            why = ", accounted for by the changed aspects"
        else:
            why = f", below the null {threshold:.2f}"
        return f"{a['aspect']}: unchanged ({_numbers(a)}{why})"
    return f"{a['aspect']}: {change_phrase(a)} ({band(a['score'])}, {_numbers(a)})"


def check_aspects(known: list[str], asked: list[str] | None) -> None:
    """Raise a one-line error naming any asked-for aspect that is not among ``known``."""
    unknown = [name for name in asked or [] if name not in known]
    if unknown:
        raise ConfigError(f"unknown aspect(s) {unknown}; this explanation has {sorted(known)}")


def _selected(expl: dict, asked: list[str] | None) -> tuple[list[dict], list[dict]]:
    aspects = {a["aspect"]: a for a in expl["aspects"]}
    check_aspects(list(aspects), asked)
    changed = [a for a in expl["aspects"] if a["changed"]]
    unchanged = [aspects[name] for name in asked or [] if not aspects[name]["changed"]]
    return changed, unchanged


def render(expl: dict, form: str = "bullets", asked: list[str] | None = None) -> str:
    """Sentences for an explanation in one of ``FORMATS``; ``asked`` names aspects to report even when unchanged."""
    if form not in FORMATS:
        raise ConfigError(f"unknown format {form!r}; choose one of {FORMATS}")
    changed, unchanged = _selected(expl, asked)
    if form == "summary":
        if not changed:
            head = "No significant change"
        else:
            head = "Changed: " + "; ".join(f"{a['aspect']} {change_phrase(a)} ({a['score']:.2f})" for a in changed)
        tail = [f"{a['aspect']} unchanged" for a in unchanged]
        return ". ".join([head, *([", ".join(tail)] if tail else [])]) + "."
    if form == "bullets":
        lines = [f"- {aspect_sentence(a)}" for a in [*changed, *unchanged]]
        return "\n".join(lines) if lines else "- no significant change in any aspect"
    groups: dict[str, list[dict]] = {}
    for a in [*changed, *unchanged]:
        groups.setdefault(a["group"], []).append(a)
    if not groups:
        return "The personalized model shows no significant change in any aspect."
    parts = []
    for group, items in groups.items():
        said = []
        for a in items:
            if a["changed"]:
                said.append(f"the {a['aspect']} shifts {change_phrase(a)} ({band(a['score'])}, {_numbers(a)})")
            else:
                said.append(f"the {a['aspect']} is unchanged ({_numbers(a)})")
        parts.append(f"{group.capitalize()}: " + "; ".join(said) + ".")
    return " ".join(parts)
