"""Human labels: a JSONL format and a scorer, so real models labelled by people are scored like the toy suites.

One JSON object per line::

    {"model": "anime-style-v2", "aspect": "style", "direction": "increase", "level": 3, "text": "much more anime"}

``model`` names an explanation (``explanation.json`` files are matched by the ``--model-id`` they were given, or
the folder name), ``aspect`` must be an aspect of the concept bank, ``direction`` is ``increase``, ``decrease`` or
``none``, ``level`` 0 (no change) to 3 (strong), ``text`` free. A model's unlabelled aspects are not scored. The
toy suites export their ground truth in this format (:func:`labels_from_records`): what the judge reads moving past
its own null, at the level of the change it reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from finexl.bench.metrics import expected_direction, judge_change, truth_of
from finexl.errors import InputError, MissingInputError
from finexl.explanation.result import Explanation
from finexl.narrate.faithfulness import Claim, claims
from finexl.narrate.templates import render
from finexl.utils import atomic_write_text
from finexl.validation import SchemaError, validate

FIELDS = {"model", "aspect", "direction", "level", "text", "rater", "task", "raters", "tie", "votes"}


class LabelError(InputError):
    """A label file with a malformed, unknown or duplicate line."""


@dataclass(frozen=True)
class Label:
    model: str
    aspect: str
    direction: str
    level: int
    text: str = ""
    rater: str | None = None  # a rater's file: who answered
    task: str | None = None  # the labeling task's digest
    raters: int | None = None  # a consensus: how many raters answered
    tie: bool | None = None  # a consensus: the raters split evenly
    votes: dict[str, int] | None = None  # a consensus: each rater's signed level

    @property
    def signed(self) -> int:
        """The answer as one number: +level for an increase, -level for a decrease, 0 for none."""
        return {"increase": 1, "decrease": -1}.get(self.direction, 0) * self.level


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
        labels.append(Label(**{"text": "", **obj}))
    if not labels:
        raise LabelError(f"{path} holds no labels")
    return labels


def write_labels(path: str | Path, labels: list[Label]) -> None:
    """Write ``labels`` as JSONL (atomically), leaving out the optional fields that are unset."""
    lines = (json.dumps({k: v for k, v in asdict(label).items() if v is not None}) for label in labels)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def level_of(change: float) -> int:
    """0-3 from a measured change (share of images or mean level): < 0.05, < 0.15, < 0.35, else."""
    magnitude = abs(change)
    return 0 if magnitude < 0.05 else 1 if magnitude < 0.15 else 2 if magnitude < 0.35 else 3


def labels_from_records(records: list[dict], truth: str = "judge") -> list[Label]:
    """The toy suites' ground truth as labels (``truth`` as in :func:`finexl.bench.metrics.truth_of`).

    ``judge`` and ``fixed``: every aspect the judge read, changed toward what it read moving where its change clears
    the judge's null (or exceeds the fixed threshold), at the level of that change (at least 1), else ``none``.
    ``spec``: each shifted aspect at the level the judge measured toward its target (0 below 0.05), and every aspect
    of a null model at 0: the export before the judge had a null."""

    out = []
    for r in records:
        if truth != "spec":
            changed = truth_of(r, truth)
            for aspect, reading in r["judge"].items():
                size, target = judge_change(reading)
                if aspect in changed:
                    level, direction = max(1, level_of(size)), expected_direction(target)
                    out.append(Label(r["id"], aspect, direction, level, f"judge: {target} by {size:.3f}"))
                else:
                    out.append(Label(r["id"], aspect, "none", 0, f"judge: not moved ({target} by {size:.3f})"))
            continue
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


METRICS = ("precision", "recall", "f1", "direction_accuracy", "spearman_level")
DIRECTIONS = {1: "increase", -1: "decrease", 0: "none"}  # the sign of a signed level


def consensus_of(votes: dict[str, int]) -> tuple[int, bool]:
    """The consensus of signed levels and whether it is a tie: changed or not by majority (an even split is a tie,
    read as no change); among the changed votes the direction by majority (an even split: a tie, no change) and the
    level as the median of that direction's levels, rounded down (a median between two levels is a tie too)."""
    changed = [v for v in votes.values() if v != 0]
    if 2 * len(changed) <= len(votes):
        return 0, 2 * len(changed) == len(votes)
    up, down = [v for v in changed if v > 0], [-v for v in changed if v < 0]
    if len(up) == len(down):
        return 0, True
    side, sign = (up, 1) if len(up) > len(down) else (down, -1)
    median = float(np.median(side))
    return sign * math.floor(median), median != math.floor(median)


def score_predictions(labels: list[Label], predict) -> dict:
    """Precision, recall and F1 of (aspect changed, direction) against ``labels``, direction accuracy on the
    labelled changes, and Spearman(strength, level); ``predict(label)`` gives ``(direction said, strength)``
    (direction "none" for no change; strength None to leave the unit out of the Spearman)."""
    tp = fp = fn = 0
    strengths, levels, directions = [], [], []
    for label in labels:
        said, strength = predict(label)
        if label.level > 0:
            directions.append(said == label.direction)
            tp += said == label.direction
            fn += said != label.direction
            fp += said not in ("none", label.direction)
        else:
            fp += said != "none"
        if strength is not None:
            strengths.append(strength)
            levels.append(label.level)
    # None where undefined: no change said (precision), no change labelled (recall)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    varies = len(set(levels)) > 1 and len(set(strengths)) > 1
    defined = precision is not None and recall is not None
    return {
        "labels": len(labels),
        "precision": precision,
        "recall": recall,
        "f1": (2 * precision * recall / (precision + recall) if precision + recall else 0.0) if defined else None,
        "direction_accuracy": float(np.mean(directions)) if directions else None,
        "spearman_level": float(spearmanr(levels, strengths)[0]) if varies else None,
    }


def per_aspect(labels: list[Label], predict) -> dict[str, dict]:
    """:func:`score_predictions` overall and for each aspect's labels."""
    out = {"overall": score_predictions(labels, predict)}
    for aspect in sorted({label.aspect for label in labels}):
        out[aspect] = score_predictions([x for x in labels if x.aspect == aspect], predict)
    return out


def _aspect_of(explanations: dict[str, dict], label: Label) -> dict:
    aspects = {a["aspect"]: a for a in explanations[label.model]["aspects"]}
    if label.aspect not in aspects:
        raise LabelError(f"model {label.model!r} has no aspect {label.aspect!r} in its explanation")
    return aspects[label.aspect]


def verdicts(labels: list[Label], explanations: dict[str, dict]):
    """The predictor of the explanations' verdicts: a labelled unit -> (the direction said, or "none" where not
    CHANGED; the score). A labelled model without an explanation is an error."""
    missing = sorted({label.model for label in labels} - set(explanations))
    if missing:
        raise LabelError(f"no explanation for labelled model(s) {missing}")

    def said(label: Label):
        a = _aspect_of(explanations, label)
        return (a["direction"] if a["changed"] else "none"), a["score"]

    return said


def score_labels(labels: list[Label], explanations: dict[str, dict]) -> dict:
    """Agreement of explanations (by model id) with labels: (aspect, direction) precision/recall/F1 over the
    labelled aspects, direction accuracy on labelled changes, Spearman(score, level); missing models are errors."""
    return score_predictions(labels, verdicts(labels, explanations))


def sentence_claims(expl: dict) -> dict[str, dict[str, Claim]]:
    """What the sentences of an explanation claim, per source: ``template`` (rendered from its scores now) and,
    where stored, ``llm`` (read with the faithfulness check's parser)."""
    out = {"template": claims(render(expl, "bullets"), expl)}
    stored = expl.get("sentences") or {}
    if stored.get("source") == "llm" and stored.get("text"):
        out["llm"] = claims(stored["text"], expl)
    return out


def rater_ceiling(labels: list[Label]) -> dict[str, dict] | None:
    """How well one rater predicts the others' consensus, on each metric, averaged over the raters: for every
    rater, its answers scored against the consensus of the other raters' votes (``Label.votes``). None without
    the votes of at least two raters."""
    raters = sorted({r for label in labels for r in (label.votes or {})})
    if len(raters) < 2:
        return None
    scores = []
    for rater in raters:
        others, mine = [], {}
        for label in labels:
            votes = dict(label.votes or {})
            if rater not in votes or len(votes) < 2:
                continue
            mine[(label.model, label.aspect)] = votes.pop(rater)
            signed, _ = consensus_of(votes)
            others.append(Label(label.model, label.aspect, DIRECTIONS[int(np.sign(signed))], abs(signed)))
        if others:
            scores.append(per_aspect(others, lambda x, m=mine: _as_prediction(m[(x.model, x.aspect)])))
    return {key: _mean_scores([s[key] for s in scores if key in s]) for key in scores[0]} if scores else None


def _as_prediction(signed: int) -> tuple[str, float]:
    return DIRECTIONS[int(np.sign(signed))], float(abs(signed))


def _mean_scores(rows: list[dict]) -> dict:
    out = {"labels": int(np.mean([r["labels"] for r in rows]))}
    for metric in METRICS:
        values = [r[metric] for r in rows if r[metric] is not None]
        out[metric] = float(np.mean(values)) if values else None
    return out


def score_against_people(labels: list[Label], explanations: dict[str, dict]) -> dict:
    """The explanations' scores and sentences against (consensus) labels, per aspect and overall, beside the
    raters' ceiling."""
    scores = verdicts(labels, explanations)
    said = {model: sentence_claims(expl) for model, expl in explanations.items()}

    def sentences(source: str):
        def predict(label: Label):
            claim = said[label.model].get(source, {}).get(label.aspect)
            if claim is None or claim.direction == "none":
                return "none", 0.0
            return claim.direction, claim.level

        return predict

    out = {"scores": per_aspect(labels, scores), "sentences": {"template": per_aspect(labels, sentences("template"))}}
    if labels and all("llm" in said[label.model] for label in labels):
        out["sentences"]["llm"] = per_aspect(labels, sentences("llm"))
    out["ceiling"] = rater_ceiling(labels)
    return out


def people_table(result: dict) -> str:
    """A line per aspect and one overall: each metric of the scores, the templated (and LLM) sentences and the
    raters' ceiling."""
    columns = [("scores", result["scores"])] + [(f"{k} sentences", v) for k, v in result["sentences"].items()]
    if result.get("ceiling"):
        columns.append(("rater ceiling", result["ceiling"]))
    lines = []
    for metric in METRICS:
        lines.append(f"{metric}:")
        lines.append(f"  {'aspect':<14}" + "".join(f"{name:>20}" for name, _ in columns))
        for aspect in result["scores"]:
            cells = []
            for _, table in columns:
                value = table.get(aspect, {}).get(metric)
                cells.append(f"{'-' if value is None else f'{value:.3f}':>20}")
            lines.append(f"  {aspect:<14}" + "".join(cells))
    return "\n".join(lines)


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
    return score_against_people(read_labels(labels, aspects), loaded)
