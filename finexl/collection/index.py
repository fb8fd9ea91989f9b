"""The index of a collection: an embedded SQLite database, ``DIR/index.sqlite`` (Python's ``sqlite3``).

Tables: ``models`` (one row per manifest id: status ``explained`` or ``failed`` with its error, path, base, scale,
tags, fingerprints, settings, sentences, residual, the divergence V_div itself as float32 bytes), ``aspects`` and
``concepts`` (every score with its interval, threshold and CHANGED flag), ``sweep`` (a weight sweep's onset,
steadiness, scales, scores and verdicts per aspect), ``leak`` (with a trigger word: each aspect without it),
``stack`` (a stack's LoRAs: ``members``; with its interaction, per aspect the stack's move against the sum of its
LoRAs' alone, the interval of their difference and the verdict). Each
model is written in one transaction, after its folder is complete (a failure: after ``failures.json``); a run
starts by indexing any finished folder the index lacks (a kill between the two), and ``rebuild`` makes the whole
index again from the folders and ``failures.json``, into a new file renamed over the old one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np

from finexl.errors import InputError, MissingInputError
from finexl.explanation.result import Explanation
from finexl.utils import atomic_write_json
from finexl.validation import read_json

INDEX_FILE = "index.sqlite"
MODELS_DIR = "models"
BASES_DIR = "bases"
EMBEDDINGS_FILE = "embeddings.npz"
FAILURES_FILE = "failures.json"  # id -> {entry, error} of the models that failed, for rebuild
SCHEMA_VERSION = "finexl-index/1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, error TEXT, path TEXT, kind TEXT, base TEXT, scale REAL, tags TEXT,
    folder TEXT, digest TEXT, fingerprint TEXT, base_fingerprint TEXT, clip_name TEXT, clip_fingerprint TEXT,
    bank_digest TEXT, settings TEXT, sentences TEXT, changed TEXT, residual REAL, n_pairs INTEGER, vdiv BLOB,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS aspects (
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE, aspect TEXT NOT NULL, grp TEXT, score REAL,
    low REAL, high REAL, threshold REAL, changed INTEGER, direction TEXT, concept TEXT, toward TEXT,
    PRIMARY KEY (model_id, aspect)
);
CREATE TABLE IF NOT EXISTS sweep (
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE, aspect TEXT NOT NULL, onset REAL,
    steady INTEGER, scales TEXT, scores TEXT, changed TEXT, PRIMARY KEY (model_id, aspect)
);
CREATE TABLE IF NOT EXISTS leak (
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE, aspect TEXT NOT NULL, trigger TEXT, score REAL,
    low REAL, high REAL, changed INTEGER, PRIMARY KEY (model_id, aspect)
);
CREATE TABLE IF NOT EXISTS members (
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE, position INTEGER NOT NULL, lora TEXT NOT NULL,
    scale REAL NOT NULL, PRIMARY KEY (model_id, position)
);
CREATE TABLE IF NOT EXISTS stack (
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE, aspect TEXT NOT NULL, verdict TEXT NOT NULL,
    stack REAL, alone TEXT, sum REAL, interaction REAL, low REAL, high REAL, PRIMARY KEY (model_id, aspect)
);
CREATE TABLE IF NOT EXISTS concepts (
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE, phrase TEXT NOT NULL, aspect TEXT, score REAL,
    low REAL, high REAL, PRIMARY KEY (model_id, phrase)
);
"""


@contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    """An open index (created if new), closed on exit; use ``with conn:`` for each transaction."""
    conn = sqlite3.connect(str(path), timeout=30)
    with closing(conn):
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(SCHEMA)
        with conn:
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        found = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
        if found != SCHEMA_VERSION:
            raise InputError(f"index {path} has schema {found!r}; this finexl reads {SCHEMA_VERSION!r}")
        yield conn


def open_existing(folder: str | Path) -> Path:
    """The index file of a collection folder; one line if there is none or it holds no model."""
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise MissingInputError(f"no index at {path}: run finexl explain-many --out {folder} first")
    try:
        with connect(path) as conn:
            n = conn.execute("SELECT count(*) FROM models WHERE status = 'explained'").fetchone()[0]
    except sqlite3.DatabaseError as err:
        raise InputError(f"{path} is not a finexl index: {err}") from err
    if n == 0:
        raise InputError(f"the index {path} holds no explained model")
    return path


def put_explained(conn: sqlite3.Connection, entry: dict, folder: str, digest: str, expl: dict, vdiv: np.ndarray):
    """Insert or replace one explained model, all its rows in one transaction."""
    models = expl.get("models", {})
    changed = [a["aspect"] for a in expl["aspects"] if a["changed"]]
    with conn:
        _delete(conn, entry["id"])
        conn.execute(
            "INSERT INTO models (id, status, error, path, kind, base, scale, tags, folder, digest, fingerprint, "
            "base_fingerprint, clip_name, clip_fingerprint, bank_digest, settings, sentences, changed, residual, "
            "n_pairs, vdiv, updated) VALUES (?, 'explained', NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, strftime('%s','now'))",
            (
                entry["id"],
                entry.get("path"),
                entry.get("kind"),
                models.get("base", {}).get("path"),
                entry.get("scale", 1.0),
                json.dumps(list(entry.get("tags") or [])),
                folder,
                digest,
                models.get("personalized", {}).get("fingerprint"),
                models.get("base", {}).get("fingerprint"),
                models.get("clip", {}).get("name"),
                models.get("clip", {}).get("fingerprint"),
                expl.get("concept_bank", {}).get("digest"),
                json.dumps(expl.get("settings", {}), default=str),
                (expl.get("sentences") or {}).get("text"),
                json.dumps(changed),
                expl["residual"].get("value"),
                expl["divergence"]["n_pairs"],
                np.asarray(vdiv, dtype=np.float32).tobytes(),
            ),
        )
        conn.executemany(
            "INSERT INTO aspects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    entry["id"],
                    a["aspect"],
                    a["group"],
                    a["score"],
                    a["interval"][0],
                    a["interval"][1],
                    a["threshold"],
                    int(a["changed"]),
                    a["direction"],
                    a["concept"],
                    a["toward"],
                )
                for a in expl["aspects"]
            ],
        )
        conn.executemany(
            "INSERT INTO concepts VALUES (?, ?, ?, ?, ?, ?)",
            [
                (entry["id"], c["phrase"], c["aspect"], c["score"], c["interval"][0], c["interval"][1])
                for c in expl.get("concepts", [])
            ],
        )
        _put_sweep(conn, entry["id"], expl.get("sweep"))
        _put_leak(conn, entry["id"], expl.get("trigger"))
        _put_stack(conn, entry["id"], models.get("personalized", {}).get("stack"), expl.get("stack"))


def _put_sweep(conn: sqlite3.Connection, model_id: str, sweep: dict | None) -> None:
    if not sweep:
        return
    conn.executemany(
        "INSERT INTO sweep VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                model_id,
                aspect,
                row["onset"],
                int(row["steady"]),
                json.dumps(sweep["scales"]),
                json.dumps(row["score"]),
                json.dumps(row["changed"]),
            )
            for aspect, row in sweep["aspects"].items()
        ],
    )


def _put_leak(conn: sqlite3.Connection, model_id: str, trigger: dict | None) -> None:
    if not trigger:
        return
    conn.executemany(
        "INSERT INTO leak VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (model_id, aspect, trigger["word"], r["score"], r["interval"][0], r["interval"][1], int(r["changed"]))
            for aspect, r in trigger["leak"].items()
        ],
    )


def _put_stack(conn: sqlite3.Connection, model_id: str, members: list | None, stack: dict | None) -> None:
    conn.executemany(
        "INSERT INTO members VALUES (?, ?, ?, ?)",
        [(model_id, i, m["lora"], m["scale"]) for i, m in enumerate(members or [])],
    )
    if not stack:
        return
    conn.executemany(
        "INSERT INTO stack VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                model_id,
                aspect,
                r["verdict"],
                r["stack"],
                json.dumps(r["alone"]),
                r["sum"],
                r["interaction"],
                r["interval"][0],
                r["interval"][1],
            )
            for aspect, r in stack["aspects"].items()
        ],
    )


def put_failed(conn: sqlite3.Connection, entry: dict, error: str) -> None:
    with conn:
        _delete(conn, entry["id"])
        conn.execute(
            "INSERT INTO models (id, status, error, path, kind, scale, tags, updated) "
            "VALUES (?, 'failed', ?, ?, ?, ?, ?, strftime('%s','now'))",
            (
                entry["id"],
                error,
                entry.get("path"),
                entry.get("kind"),
                entry.get("scale", 1.0),
                json.dumps(list(entry.get("tags") or [])),
            ),
        )


def _delete(conn: sqlite3.Connection, model_id: str) -> None:
    for table, column in (
        ("aspects", "model_id"),
        ("concepts", "model_id"),
        ("sweep", "model_id"),
        ("leak", "model_id"),
        ("members", "model_id"),
        ("stack", "model_id"),
        ("models", "id"),
    ):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (model_id,))


def digests(conn: sqlite3.Connection) -> dict[str, str]:
    """id -> run digest of every explained model in the index."""
    return dict(conn.execute("SELECT id, digest FROM models WHERE status = 'explained'").fetchall())


def read_folder(model_dir: Path) -> tuple[dict, dict, np.ndarray] | None:
    """(explanation dict, the run record, V_div) of a finished model folder; None if it is not one."""

    path = model_dir / "explanation.json"
    if not path.is_file():
        return None
    expl = Explanation.from_json(path).to_dict()
    run = expl.get("settings", {}).get("collection")
    if not run:
        return None
    with np.load(model_dir / EMBEDDINGS_FILE) as saved:
        vdiv = saved["vdiv"]
    return expl, run, vdiv


def index_folder(conn: sqlite3.Connection, out: Path, model_dir: Path) -> bool:
    """Index one finished model folder; False if it is not one."""
    found = read_folder(model_dir)
    if found is None:
        return False
    expl, run, vdiv = found
    put_explained(conn, run["entry"], str(model_dir.relative_to(out)), run["digest"], expl, vdiv)
    return True


def reconcile(conn: sqlite3.Connection, out: Path) -> int:
    """Index every finished folder the index lacks or holds with another digest (a run killed after a folder was
    written and before its row was); returns how many were added."""
    known = digests(conn)
    added = 0
    for model_dir in sorted((out / MODELS_DIR).glob("*")):
        found = read_folder(model_dir) if model_dir.is_dir() and not model_dir.name.startswith(".") else None
        if found is not None and known.get(model_dir.name) != found[1]["digest"]:
            expl, run, vdiv = found
            put_explained(conn, run["entry"], str(model_dir.relative_to(out)), run["digest"], expl, vdiv)
            added += 1
    return added


def record_failure(out: Path, entry: dict, error: str | None) -> None:
    """Keep (``error``) or drop (None: it succeeded) a model's failure in ``out/failures.json``, atomically."""

    path = out / FAILURES_FILE
    failures = read_failures(out)
    if error is None and entry["id"] not in failures:
        return
    if error is None:
        failures.pop(entry["id"])
    else:
        failures[entry["id"]] = {"entry": entry, "error": error}
    atomic_write_json(path, failures)


def read_failures(out: Path) -> dict:

    path = out / FAILURES_FILE
    return read_json(path, "failures") if path.is_file() else {}


def rebuild_index(folder: str | Path) -> int:
    """Make ``folder/index.sqlite`` again from the model folders and ``failures.json``; written to a new file
    renamed over the old one. Returns the number of explained models indexed."""
    out = Path(folder)
    if not (out / MODELS_DIR).is_dir():
        raise MissingInputError(f"{out / MODELS_DIR} does not exist: not a finexl explain-many folder")
    tmp = out / f".{INDEX_FILE}.rebuild"
    tmp.unlink(missing_ok=True)
    try:
        with connect(tmp) as conn:
            n = reconcile(conn, out)
            for failure in read_failures(out).values():
                put_failed(conn, failure["entry"], failure["error"])
        os.replace(tmp, out / INDEX_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    return n
