"""Every JSON, JSONL and CSV file finexl reads is checked against a published schema before use.

The schemas ship with the package (``finexl/schemas/*.schema.json``, JSON Schema 2020-12) and are checked with
``jsonschema``. Numbers must be finite: Python's ``json`` reads ``NaN`` and ``Infinity``, which no schema's
``number`` lets through here. A file that fails gives one line naming the file (and line), the field and the
problem, as a :class:`~finexl.errors.InputError` (exit 2 in the CLI), before anything is written.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from importlib import resources
from pathlib import Path

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match

from finexl.errors import InputError, MissingInputError

SCHEMAS = (
    "explanation",
    "samples",
    "label",
    "manifest",
    "train_record",
    "concept_bank",
    "failures",
    "captions",
    "caption_line",
    "checkpoint_state",
    "truth",
    "bench_results",
    "task",
)


class SchemaError(InputError):
    """A file finexl reads that does not match its schema."""


def schema(name: str) -> dict:
    """The published schema ``name`` (one of :data:`SCHEMAS`)."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown schema {name!r}; finexl has {', '.join(SCHEMAS)}")
    return json.loads(resources.files("finexl.schemas").joinpath(f"{name}.schema.json").read_text("utf-8"))


@cache
def _validator(name: str):

    def finite_number(checker, value) -> bool:  # JSON has no NaN or infinity; Python's json reads them
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("number", finite_number)
    kind = validators.extend(Draft202012Validator, type_checker=checker)
    s = schema(name)
    kind.check_schema(s)
    return kind(s)


def field_path(parts) -> str:
    """``["aspects", 0, "score"]`` -> ``aspects[0].score``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(the top level)"


def validate(obj, name: str, source: str | Path):
    """``obj`` checked against schema ``name``; returns it. The first problem (the deepest, most specific one) in
    one line: ``SOURCE: aspects[0].score: nan is not of type 'number'``."""

    error = best_match(_validator(name).iter_errors(obj))
    if error is None:
        return obj
    message = error.message
    if len(message) > 200:
        message = message[:200] + "..."
    raise SchemaError(f"{source}: {field_path(error.absolute_path)}: {message} (schema {name})")


def read_json(path: str | Path, name: str, what: str | None = None):
    """A JSON file, decoded and checked against schema ``name``; one line if it is missing, not UTF-8 JSON, or
    does not match."""
    return validate(load_json(path, what or name.replace("_", " ")), name, path)


def load_json(path: str | Path, what: str):
    """A JSON file, decoded (not yet checked); one line if it is missing or not UTF-8 JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise MissingInputError(f"{what} {path} does not exist") from err
    except IsADirectoryError as err:
        raise InputError(f"{what} {path} is a folder, not a file") from err
    except UnicodeDecodeError as err:
        raise SchemaError(f"{path}: not UTF-8 text ({err.reason})") from err
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise SchemaError(f"{path}: not JSON (line {err.lineno}: {err.msg})") from err
    return obj


def _type_of(spec: dict, defs: dict) -> str:
    if "$ref" in spec:
        spec = defs[spec["$ref"].split("/")[-1]]
    if "const" in spec:
        return f"`{json.dumps(spec['const'])}`"
    if "enum" in spec:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in spec["enum"])
    if "oneOf" in spec:
        return " or ".join(_type_of(s, defs) for s in spec["oneOf"])
    kind = spec.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    out = " or ".join(kinds)
    if "array" in kinds and "items" in spec and "type" in spec["items"]:
        out = out.replace("array", f"array of {_type_of(spec['items'], defs)}")
    bounds = [
        f"{k} {spec[k]}" for k in ("minimum", "maximum", "exclusiveMaximum", "minItems", "maxItems") if k in spec
    ]
    return out + (f" ({', '.join(bounds)})" if bounds else "")


def schema_table(name: str) -> str:
    """A Markdown table of every field of schema ``name`` (path, type and bounds, required, meaning): what
    ``docs/explanation-schema.md`` shows, generated so that the page cannot drift from the schema."""
    s = schema(name)
    defs = s.get("$defs", {})
    rows = ["| field | type | required | meaning |", "|---|---|---|---|"]

    def walk(spec: dict, prefix: str, required: set) -> None:
        for key, sub in spec.get("properties", {}).items():
            path = f"{prefix}{key}"
            meaning = sub.get("description", "").replace("|", "\\|")
            rows.append(f"| `{path}` | {_type_of(sub, defs)} | {'yes' if key in required else ''} | {meaning} |")
            if "properties" in sub:
                walk(sub, f"{path}.", set(sub.get("required", ())))
            items = sub.get("items")
            if isinstance(items, dict) and "properties" in items:
                walk(items, f"{path}[].", set(items.get("required", ())))

    walk(s, "", set(s.get("required", ())))
    return "\n".join(rows) + "\n"


def fill_schema_tables(text: str) -> str:
    """``text`` (a Markdown page) with each block between ``<!-- schema:NAME -->`` and ``<!-- /schema:NAME -->``
    replaced by :func:`schema_table` of NAME (``python scripts/schema_docs.py`` rewrites the page, a test checks
    it)."""

    def table(m: re.Match) -> str:
        return f"<!-- schema:{m.group(1)} -->\n{schema_table(m.group(1))}<!-- /schema:{m.group(1)} -->"

    return re.sub(r"<!-- schema:(\w+) -->.*?<!-- /schema:\1 -->", table, text, flags=re.S)
