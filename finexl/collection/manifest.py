"""The manifest of a collection: one row per model to explain, in JSONL or CSV.

Columns: ``id`` (a name for the model's folder), ``path`` (a LoRA file, a folder holding
``pytorch_lora_weights.safetensors``, or a fine-tuned diffusers pipeline folder), and optionally ``base`` (the base
pipeline folder; default the run's), ``scale`` (LoRA strength, default 1) and ``tags`` (a list in JSONL; in CSV,
separated by ``;``). Relative paths are read from the manifest's own folder, so a manifest moves with its models.

A duplicate id or an unknown column stops the run before any work, naming the line. A row that cannot be explained
(no path, a path that does not exist, a bad scale or id) is returned with its ``problem`` set: the run records it as
failed and goes on.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from finexl.errors import ConfigError

COLUMNS = ("id", "path", "base", "scale", "tags")
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ManifestError(ConfigError):
    """A manifest that cannot be run at all (unreadable, an unknown column, a duplicate id)."""


@dataclass(frozen=True)
class Entry:
    id: str
    path: str | None
    base: str | None = None
    scale: float = 1.0
    tags: tuple[str, ...] = ()
    line: int = 0
    problem: str | None = None  # why this row cannot be explained; None if it can
    kind: str = field(default="lora")  # "lora" or "model" (a fine-tuned pipeline folder)


def read_manifest(path: str | Path) -> list[Entry]:
    """The rows of a ``.jsonl`` or ``.csv`` manifest (see the module docstring)."""
    from finexl.utils import read_text

    path = Path(path)
    text = read_text(path, "manifest", ManifestError)
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(text, path)
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = _jsonl_rows(text, path)
    else:
        raise ManifestError(f"manifest {path}: expected a .jsonl or .csv file")
    entries, seen = [], {}
    for line, row in rows:
        unknown = sorted(set(row) - set(COLUMNS))
        if unknown:
            raise ManifestError(f"{path} line {line}: unknown column(s) {unknown}; known: {', '.join(COLUMNS)}")
        model_id = str(row.get("id") or "").strip()
        if model_id in seen:
            raise ManifestError(f"{path} line {line}: id {model_id!r} already on line {seen[model_id]}")
        if model_id:
            seen[model_id] = line
        entries.append(_entry(row, model_id, line, path.parent))
    if not entries:
        raise ManifestError(f"manifest {path} has no rows")
    return entries


def _entry(row: dict, model_id: str, line: int, root: Path) -> Entry:
    def problem(text: str) -> Entry:
        return Entry(model_id or f"line-{line}", row.get("path"), line=line, problem=text)

    if not SAFE_ID.match(model_id):
        return problem(f"line {line}: id {model_id!r} must be letters, digits, '.', '_' or '-' (a folder name)")
    raw_path = row.get("path")
    if not raw_path or not str(raw_path).strip():
        return problem(f"line {line}: no path")
    target = _resolve(str(raw_path).strip(), root)
    base = _resolve(str(row["base"]).strip(), root) if row.get("base") not in (None, "") else None
    try:
        scale = float(row["scale"]) if row.get("scale") not in (None, "") else 1.0
    except (TypeError, ValueError):
        return problem(f"line {line}: scale {row.get('scale')!r} is not a number")
    if not math.isfinite(scale):
        return problem(f"line {line}: scale must be finite, got {scale}")
    tags = row.get("tags") or ()
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(";") if t.strip()]
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        return problem(f"line {line}: tags must be a list of strings")
    if not Path(target).exists():
        return Entry(model_id, target, base, scale, tuple(tags), line, f"{target} does not exist")
    kind = "model" if (Path(target) / "model_index.json").is_file() else "lora"
    return Entry(model_id, target, base, scale, tuple(tags), line, None, kind)


def _resolve(value: str, root: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else root / p)


def _jsonl_rows(text: str, path: Path) -> list[tuple[int, dict]]:
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path} line {i}: not JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise ManifestError(f"{path} line {i}: expected a JSON object")
        rows.append((i, row))
    return rows


def _csv_rows(text: str, path: Path) -> list[tuple[int, dict]]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise ManifestError(f"manifest {path} has no header line")
    header = [h.strip() for h in reader.fieldnames]
    unknown = sorted(set(header) - set(COLUMNS))
    if unknown:
        raise ManifestError(f"{path} line 1: unknown column(s) {unknown}; known: {', '.join(COLUMNS)}")
    rows = []
    for i, row in enumerate(reader, start=2):
        if None in row:
            raise ManifestError(f"{path} line {i}: more fields than the header has")
        rows.append((i, {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items()}))
    return rows
