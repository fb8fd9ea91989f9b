"""The manifest of a collection: one row per model to explain, in JSONL or CSV.

Columns: ``id`` (a name for the model's folder), ``path`` (a LoRA file, a folder holding
``pytorch_lora_weights.safetensors``, or a fine-tuned diffusers pipeline folder), and optionally ``base`` (the base
pipeline folder; default the run's), ``scale`` (LoRA strength, default 1) and ``tags`` (a list in JSONL; in CSV,
separated by ``;``). A stack of LoRAs: ``path`` a list of two or more LoRAs and ``scale`` one number or a list, one
per LoRA (in CSV, both separated by ``;``). Relative paths are read from the manifest's own folder, so a manifest
moves with its models.

Every row is checked against ``finexl/schemas/manifest.schema.json``: a wrong type, a non-finite scale, an id that
cannot be a folder name, an unknown column or a duplicate id stops the run before any work, naming the line. A row
without an id takes its path's name (``my_style.safetensors`` -> ``my_style``), checked against every other id. A
row that cannot be explained (no path, a path that does not exist) is returned with its ``problem`` set: the run
records it as failed and goes on.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from finexl.errors import ConfigError
from finexl.loading import TOY_PREFIX, LoraError, shipped_lora_path
from finexl.utils import read_text
from finexl.validation import SchemaError, validate

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
    kind: str = field(default="lora")  # "lora", "model" (a fine-tuned pipeline folder) or "stack"
    stack: tuple[tuple[str, float], ...] = ()  # a stack's LoRAs with their scales, ``path`` and ``scale`` the first's

    @property
    def shown_path(self) -> str | None:
        """The path as the index shows it: a stack's LoRAs joined by `` + ``."""
        return " + ".join(p for p, _ in self.stack) if self.stack else self.path


def read_manifest(path: str | Path) -> list[Entry]:
    """The rows of a ``.jsonl`` or ``.csv`` manifest (see the module docstring)."""

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
        try:
            validate(row, "manifest", f"{path} line {line}")
        except SchemaError as err:
            raise ManifestError(str(err)) from err
        model_id = (row.get("id") or "").strip() or derived_id(row.get("path"), path, line)
        if model_id in seen:
            how = "" if row.get("id") else " (derived from the path: give each row an id)"
            raise ManifestError(f"{path} line {line}: id {model_id!r} already on line {seen[model_id]}{how}")
        seen[model_id] = line
        entries.append(_entry(row, model_id, line, path.parent))
    if not entries:
        raise ManifestError(f"manifest {path} has no rows")
    return entries


def derived_id(model_path: str | list | None, manifest: Path, line: int) -> str:
    """The id of a row without one: its path's file or folder name, without ``.safetensors``, with any character
    a folder name cannot hold as ``-`` (a stack's names joined by ``__``). A row with neither is refused."""
    if isinstance(model_path, list):
        return "__".join(derived_id(p, manifest, line) for p in model_path)[:128].rstrip("._-")
    if not model_path or not str(model_path).strip():
        raise ManifestError(f"{manifest} line {line}: no id and no path")
    name = Path(str(model_path).strip().replace("toy:", "toy-")).name.removesuffix(".safetensors")
    model_id = re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")[:128]
    if not SAFE_ID.match(model_id):
        raise ManifestError(f"{manifest} line {line}: no id, and none can be made from the path {model_path!r}")
    return model_id


def _entry(row: dict, model_id: str, line: int, root: Path) -> Entry:
    raw_path = row.get("path")
    if isinstance(raw_path, list):
        return _stack_entry(row, model_id, line, root)
    if not raw_path or not str(raw_path).strip():
        return Entry(model_id, None, line=line, problem=f"line {line}: no path")
    target = _resolve(str(raw_path).strip(), root)
    base = _resolve(str(row["base"]).strip(), root) if row.get("base") not in (None, "") else None
    if isinstance(row.get("scale"), list):
        raise ManifestError(f"line {line}: a list of scales is for a stack (a list of paths); one LoRA takes one")
    scale = float(row["scale"]) if row.get("scale") is not None else 1.0  # a finite number (the schema)
    tags = tuple(row.get("tags") or ())
    if not Path(target).exists():
        return Entry(model_id, target, base, scale, tags, line, f"{target} does not exist")
    kind = "model" if (Path(target) / "model_index.json").is_file() else "lora"
    return Entry(model_id, target, base, scale, tags, line, None, kind)


def _stack_entry(row: dict, model_id: str, line: int, root: Path) -> Entry:
    """A stack's row: two or more LoRAs, one scale for all or one each."""
    paths = [_resolve(str(p).strip(), root) for p in row["path"]]
    scales = row.get("scale")
    if not isinstance(scales, list):
        scales = [float(scales) if scales is not None else 1.0] * len(paths)
    if len(scales) != len(paths):
        raise ManifestError(f"line {line}: a stack of {len(paths)} LoRAs takes one scale or {len(paths)}")
    scales = [float(x) for x in scales]
    base = _resolve(str(row["base"]).strip(), root) if row.get("base") not in (None, "") else None
    stack = tuple(zip(paths, scales, strict=True))
    tags = tuple(row.get("tags") or ())
    missing = [p for p in paths if not p.strip() or not Path(p).exists()]
    problem = f"{missing[0] or 'an empty path'} does not exist" if missing else None
    folders = [p for p in paths if (Path(p) / "model_index.json").is_file()]
    if folders and not problem:
        problem = f"{folders[0]} is a fine-tuned pipeline folder: a stack is of LoRAs"
    return Entry(model_id, paths[0], base, scales[0], tags, line, problem, "stack", stack)


def _resolve(value: str, root: Path) -> str:

    if value.startswith(TOY_PREFIX):  # a shipped toy LoRA: toy:red
        try:
            return str(shipped_lora_path(value))
        except LoraError:
            return value  # recorded as this row's failure: it does not exist
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


def _typed(row: dict) -> dict:
    """A CSV row's text as the schema's types: empty cells are absent, ``scale`` a number where it reads as one (a
    cell that does not stays text, and the schema names it), ``tags`` split at ``;``, and a ``path`` and a ``scale``
    holding ``;`` (a stack) split too."""
    out = {k: v for k, v in row.items() if v not in (None, "")}
    if ";" in out.get("path", ""):  # a stack
        out["path"] = [p.strip() for p in out["path"].split(";") if p.strip()]
    if "scale" in out:
        parts = [p.strip() for p in out["scale"].split(";")]
        try:
            numbers = [float(p) for p in parts]
            out["scale"] = numbers if len(parts) > 1 else numbers[0]
        except ValueError:
            pass
    if "tags" in out:
        out["tags"] = [t.strip() for t in out["tags"].split(";") if t.strip()]
    return out


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
        rows.append((i, _typed({k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items()})))
    return rows
