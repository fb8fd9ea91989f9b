"""The result of an explanation: :class:`Explanation`, saved as ``explanation.json`` and read back from it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from finexl.errors import InputError, MissingInputError

SCHEMA = "finexl-explanation/1"


@dataclass
class AspectScore:
    """One aspect's verdict: its score in [0, 1] with an interval, and whether it beat the null threshold."""

    aspect: str
    group: str
    score: float
    interval: list[float]  # [low, high]
    direction: str  # "increase", "decrease" or "none"
    concept: str  # the concept of the aspect that moved most
    toward: str  # the phrase the change moves toward (the antonym for a decrease)
    threshold: float | None  # what the base reaches against itself; None without the null test
    changed: bool
    joint_score: float | None = None  # two-part methods (finexl): the joint fit's score


@dataclass
class Explanation:
    """How a personalized model differs from its base, aspect by aspect (see ``docs`` for the schema).

    ``aspects`` come CHANGED first, then the rest, each by score. ``settings`` holds every setting of the run,
    ``models`` the fingerprints of the base, the personalization and the CLIP.
    """

    method: str
    aspects: list[AspectScore]
    concepts: list[dict]
    residual: dict
    divergence: dict
    concept_bank: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    sentences: dict | None = None
    schema: str = SCHEMA

    @property
    def changed(self) -> list[str]:
        """Names of the aspects marked CHANGED, strongest first."""
        return [a.aspect for a in self.aspects if a.changed]

    def aspect(self, name: str) -> AspectScore:
        for a in self.aspects:
            if a.aspect == name:
                return a
        raise KeyError(f"no aspect {name!r}; this explanation has {[a.aspect for a in self.aspects]}")

    def table(self, top: int | None = None) -> str:
        """A readable table, one row per aspect."""
        return format_explanation(self.to_dict(), top=top)

    def narrate(self, form: str = "bullets", aspects: list[str] | None = None, backend=None, retries: int = 2):
        """Sentences for this explanation (templated, or by a chat ``backend``); stored in ``sentences``."""
        from finexl.narrate.narrator import narrate

        narration = narrate(self.to_dict(), backend, form, aspects, retries=retries)
        self.sentences = narration.to_json()
        return narration

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | Path) -> Path:
        """Write ``path`` (a file, or a folder that gets ``explanation.json``) atomically; returns the file."""
        from finexl.utils import atomic_write_json

        path = Path(path)
        if path.is_dir():
            path = path / "explanation.json"
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, obj: dict, source: str = "<explanation>") -> Explanation:
        if not isinstance(obj, dict) or not isinstance(obj.get("aspects"), list):
            raise InputError(f"{source} is not an explanation (no 'aspects' list)")
        if obj.get("schema", SCHEMA) != SCHEMA:
            raise InputError(f"{source} has schema {obj.get('schema')!r}; this finexl reads {SCHEMA!r}")
        known = {f.name for f in fields(cls)}
        aspect_keys = {f.name for f in fields(AspectScore)}
        try:
            aspects = [AspectScore(**{k: v for k, v in a.items() if k in aspect_keys}) for a in obj["aspects"]]
            return cls(**{k: v for k, v in obj.items() if k in known and k != "aspects"}, aspects=aspects)
        except (TypeError, AttributeError) as err:
            raise InputError(f"{source} is not a complete explanation: {err}") from err

    @classmethod
    def from_json(cls, path: str | Path) -> Explanation:
        """Read an ``explanation.json`` (or a folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "explanation.json"
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise MissingInputError(f"explanation file {path} does not exist") from err
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{path} is not an explanation JSON file: {err}") from err
        return cls.from_dict(obj, str(path))


def format_explanation(expl: dict, top: int | None = None) -> str:
    """A readable table of an explanation dict: one row per aspect, in the explanation's order."""
    conf = expl.get("settings", {}).get("confidence", 0.9)
    joint = any(a.get("joint_score") is not None for a in expl["aspects"])  # two-part methods (finexl)
    lines = [f"{'aspect':<12} {'group':<12} {'score':>6}  {int(conf * 100)}% interval   {'null':>5}  "
             + ("joint  " if joint else "") + f"{'change':<8} toward"]  # fmt: skip
    for row in expl["aspects"][:top]:
        lo, hi = row["interval"]
        thr = "" if row["threshold"] is None else f"{row['threshold']:.3f}"
        change = "CHANGED" if row["changed"] else ("-" if row["threshold"] is not None else "?")
        joint_cell = f"{row['joint_score']:.3f}  " if joint else ""
        lines.append(f"{row['aspect']:<12} {row['group']:<12} {row['score']:6.3f}  [{lo:.3f}, {hi:.3f}]   {thr:>5}  "
                     f"{joint_cell}{change:<8} {row['toward']}")  # fmt: skip
    if joint:
        lines.append("joint: the joint fit's score; an aspect is CHANGED only if that fit needs it too")
    res = expl["residual"]
    lines.append("")
    changed = [a["aspect"] for a in expl["aspects"] if a["changed"]]
    if changed:
        lines.append(f"changed: {', '.join(changed)}")
    elif any(a["threshold"] is not None for a in expl["aspects"]):
        lines.append("no significant change: no aspect's interval lies above what the base reaches against itself")
    low, high = res["interval"]
    n_pairs = expl["divergence"]["n_pairs"]
    if res["value"] is None:
        lines.append(f"({n_pairs} pairs, method {expl['method']}: no residual, it scores concepts one by one)")
    else:
        lines.append(
            f"unexplained part of the divergence: {res['value']:.3f} [{low:.3f}, {high:.3f}]   ({n_pairs} pairs, "
            f"method {expl['method']})"
        )
    return "\n".join(lines)
