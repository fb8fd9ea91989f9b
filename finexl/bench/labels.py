"""Human labels: a JSONL format and a scorer, so real models labelled by people are scored like the toy suites.

One JSON object per line::

    {"model": "anime-style-v2", "aspect": "style", "direction": "increase", "level": 3, "text": "much more anime"}

``model`` names an explanation (``explanation.json`` files are matched by the ``--model-id`` they were given, or
the folder name), ``aspect`` must be an aspect of the concept bank, ``direction`` is ``increase``, ``decrease`` or
``none``, ``level`` 0 (no change) to 3 (strong), ``text`` free. A model's unlabelled aspects are not scored. The
toy suites export their ground truth in this format (:func:`labels_from_records`), with levels from what the judge
measured.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from finexl.bench.metrics import expected_direction
from finexl.errors import InputError, MissingInputError
from finexl.explanation.result import Explanation
from finexl.utils import atomic_write_text
from finexl.validation import SchemaError, validate

FIELDS = {"model", "aspect", "direction", "level", "text"}


class LabelError(InputError):
    """A label file with a malformed, unknown or duplicate line."""


@dataclass(frozen=True)
class Label:
    model: str
    aspect: str
    direction: str
    level: int
    text: str = ""


def read_labels(path: str | Path, aspects: list[str] | None = None) -> list[Label]:
    """Parse and validate a JSONL label file; every error names the line."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"label file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise LabelError(f"{path} is not UTF-8 text: {err}") from err
    labels, seen = [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise LabelError(f"{where}: not a JSON object ({err.msg})") from err
        if not isinstance(obj, dict) or not {"model", "aspect", "direction", "level"} <= set(obj):
            raise LabelError(f"{where}: needs the fields model, aspect, direction, level (and optional text)")
        if set(obj) - FIELDS:
            raise LabelError(f"{where}: unknown field(s) {sorted(set(obj) - FIELDS)}")
        try:
            validate(obj, "label", where)
        except SchemaError as err:
            raise LabelError(str(err)) from err
        if aspects is not None and obj["aspect"] not in aspects:
            raise LabelError(f"{where}: unknown aspect {obj['aspect']!r}; the concept bank has {sorted(aspects)}")
        if (obj["level"] == 0) != (obj["direction"] == "none"):
            raise LabelError(f"{where}: level 0 goes with direction 'none' and only with it")
        key = (obj["model"], obj["aspect"])
        if key in seen:
            raise LabelError(
                f"{where}: duplicate label for model {key[0]!r}, aspect {key[1]!r} (first on line {seen[key]})"
            )
        seen[key] = number
        labels.append(
            Label(str(obj["model"]), obj["aspect"], obj["direction"], obj["level"], str(obj.get("text", "")))
        )
    if not labels:
        raise LabelError(f"{path} holds no labels")
    return labels


def write_labels(path: str | Path, labels: list[Label]) -> None:

    atomic_write_text(path, "".join(json.dumps(asdict(label)) + "\n" for label in labels))


def level_of(change: float) -> int:
    """0-3 from a measured change (share of images or mean level): < 0.05, < 0.15, < 0.35, else."""
    magnitude = abs(change)
    return 0 if magnitude < 0.05 else 1 if magnitude < 0.15 else 2 if magnitude < 0.35 else 3


def labels_from_records(records: list[dict]) -> list[Label]:
    """The toy suites' ground truth as labels: each shifted aspect, with the level the judge measured (for a
    categorical aspect the change in the share of the target value); null models get level 0 on every aspect."""

    out = []
    for r in records:
        if r["kind"] == "null":
            out.extend(Label(r["id"], a, "none", 0, "no change (null model)") for a in r["judge"])
            continue
        for aspect, target, strength in r["shifts"]:
            change = r["judge"][aspect]
            measured = change[target] if isinstance(change, dict) else change
            level = level_of(measured)
            direction = expected_direction(target) if level else "none"
            out.append(Label(r["id"], aspect, direction, level, f"{aspect}={target}@{strength:g} (spec)"))
    return out


def score_labels(labels: list[Label], explanations: dict[str, dict]) -> dict:
    """Agreement of explanations (by model id) with labels: (aspect, direction) precision/recall/F1 over the
    labelled aspects, direction accuracy on labelled changes, Spearman(score, level); missing models are errors."""
    missing = sorted({label.model for label in labels} - set(explanations))
    if missing:
        raise LabelError(f"no explanation for labelled model(s) {missing}")
    tp = fp = fn = 0
    scores, levels, directions = [], [], []
    for label in labels:
        aspects = {a["aspect"]: a for a in explanations[label.model]["aspects"]}
        if label.aspect not in aspects:
            raise LabelError(f"model {label.model!r} has no aspect {label.aspect!r} in its explanation")
        a = aspects[label.aspect]
        said = a["direction"] if a["changed"] else "none"
        if label.level > 0:
            directions.append(said == label.direction)
            tp += said == label.direction
            fn += said != label.direction
            fp += said not in ("none", label.direction)
        else:
            fp += said != "none"
        scores.append(a["score"])
        levels.append(label.level)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    rho = spearmanr(levels, scores)[0] if len(set(levels)) > 1 and len(set(scores)) > 1 else 0.0
    return {
        "labels": len(labels),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "direction_accuracy": float(np.mean(directions)) if directions else None,
        "spearman_level": float(rho),
    }


def score_explanations(labels: str | Path, explanations: list[str | Path]) -> dict:
    """Score explanation files (or folders holding ``explanation.json``; the model id is the folder name, or the
    file's stem) against a JSONL label file. Two explanations with the same model id are refused."""

    loaded: dict[str, dict] = {}
    for path in explanations:
        p = Path(path)
        file = p / "explanation.json" if p.is_dir() else p
        expl = Explanation.from_json(file).to_dict()  # checked against the explanation schema
        model = file.parent.name if file.name == "explanation.json" else file.stem
        if model in loaded:
            raise InputError(f"two explanations are for model {model!r} ({file} and an earlier one); each model once")
        loaded[model] = expl
    aspects = sorted({a["aspect"] for e in loaded.values() for a in e["aspects"]})
    return score_labels(read_labels(labels, aspects), loaded)
