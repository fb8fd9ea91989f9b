"""A labeling task for people: ``TASK/label.html``, one self-contained page that shows explained models as pairs of
base and personalized images and asks, aspect by aspect, what changed; and ``TASK/task.json``, what it asks.

The page needs no server and no network (images inline, script inline, a Content-Security-Policy that allows
nothing else), so it can be sent to a rater. It never shows the explanation's verdicts (no anchoring). The rater's
answers are kept in the browser's ``localStorage`` under the task's digest and the rater's id as they are given;
models and aspects come in an order shuffled per rater; the export is finexl's label format
(:mod:`finexl.bench.labels`) with the rater's id and the task's digest, read by ``finexl label merge``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from finexl.errors import InputError, MissingInputError
from finexl.explanation.result import SAMPLES_DIR, Explanation, Samples
from finexl.report.images import data_uri
from finexl.utils import atomic_write_json, atomic_write_text, writing
from finexl.validation import read_json

LABEL_PAGE = "label.html"
TASK_FILE = "task.json"
DIRECTION_CHOICES = ("no change", "more", "less")
LEVEL_CHOICES = ("slight", "moderate", "strong")


@dataclass
class TaskModel:
    """One model of a task: its id, the pairs shown (prompt, base and personalized image as data URIs) and the
    aspects asked about."""

    id: str
    pairs: list[dict]
    aspects: list[str]


def explained_folders(paths: list[str | Path]) -> list[tuple[str, Path]]:
    """``(model id, folder)`` of every explanation under ``paths``: an ``explain --out`` folder is one model (its
    folder's name), an ``explain-many`` folder one per ``models/ID``."""
    out = []
    for path in map(Path, paths):
        if (path / "explanation.json").is_file():
            out.append((path.name, path))
        elif (path / "models").is_dir():
            out.extend((p.name, p) for p in sorted((path / "models").iterdir()) if (p / "explanation.json").is_file())
        else:
            raise MissingInputError(f"{path} holds no explanation.json and no models/ folder of explain-many")
    ids = [model for model, _ in out]
    duplicate = next((m for m in ids if ids.count(m) > 1), None)
    if duplicate is not None:
        raise InputError(f"two explanations are for model {duplicate!r}; each model once")
    if not out:
        raise MissingInputError("no explanations found to label")
    return out


def task_models(paths: list[str | Path], pairs: int = 8) -> list[TaskModel]:
    """The models of a task, each with up to ``pairs`` of its kept pairs (``explain --out`` keeps 16 by default)."""
    models = []
    for model, folder in explained_folders(paths):
        explanation = Explanation.from_json(folder)
        if not (folder / SAMPLES_DIR).is_dir():
            raise MissingInputError(
                f"{folder} has no {SAMPLES_DIR}/ (explain --out with --report-pairs > 0 keeps them)"
            )
        samples = Samples.load(folder / SAMPLES_DIR)
        if not samples.index:
            raise InputError(f"{folder / SAMPLES_DIR} keeps no pairs to show")
        shown = [
            {"prompt": samples.prompts[j], "base": data_uri(samples.base[j]), "tuned": data_uri(samples.tuned[j])}
            for j in range(min(pairs, len(samples.index)))
        ]
        models.append(
            TaskModel(
                model, shown, list(explanation.concept_bank.get("aspects") or [a.aspect for a in explanation.aspects])
            )
        )
    return models


def task_digest(models: list[TaskModel]) -> str:
    """A short SHA-256 of what the task shows and asks: a label of another task has another digest."""
    content = [{"id": m.id, "pairs": m.pairs, "aspects": m.aspects} for m in models]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def make_task(
    paths: list[str | Path], out: str | Path, pairs: int = 8, title: str | None = None, overwrite: bool = False
) -> Path:
    """Write ``out/label.html`` and ``out/task.json`` for the explained models under ``paths``; returns the page."""
    out = Path(out)
    if (out / LABEL_PAGE).exists() and not overwrite:
        raise InputError(f"{out / LABEL_PAGE} exists; pass --overwrite to replace it")
    models = task_models(paths, pairs)
    digest = task_digest(models)
    env = Environment(loader=PackageLoader("finexl.bench"), autoescape=True, undefined=StrictUndefined)
    page = env.get_template("label.html.j2").render(
        title=title or f"Label {len(models)} models",
        task=digest,
        data={
            "task": digest,
            "models": [m.__dict__ for m in models],
            "directions": DIRECTION_CHOICES,
            "levels": LEVEL_CHOICES,
        },
    )
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            out / TASK_FILE, {"task": digest, "models": [{"id": m.id, "aspects": m.aspects} for m in models]}
        )
        atomic_write_text(out / LABEL_PAGE, page)
    return out / LABEL_PAGE


def read_task(path: str | Path) -> tuple[str, list[tuple[str, str]]]:
    """The digest and the (model, aspect) units of a task (its folder or ``task.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / TASK_FILE
    obj = read_json(path, "task", "task file")
    return obj["task"], [(m["id"], a) for m in obj["models"] for a in m["aspects"]]
