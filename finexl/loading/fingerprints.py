"""Fingerprints: a short SHA-256 over the configs and weights of a model folder or file, kept in the cache folder for
large weights (hashed once per file, size and modification time).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from finexl.utils import CACHE_READ_ERRORS, atomic_write_json, default_cache_dir

logger = logging.getLogger(__name__)

# the files of a model folder that make the model: configs, tokenizers and weights in every format
FINGERPRINT_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


# Weights this large are hashed once per (file, size, modification time): the digest is kept in the cache folder
FINGERPRINT_CACHE_BYTES = 64 << 20
FINGERPRINT_CACHE_FILE = "fingerprints.json"


def fingerprint_folder(path: str | Path) -> str:
    """A short SHA-256 over the configs and weights of a model folder or a single weights file.

    A folder or file of at least ``FINGERPRINT_CACHE_BYTES`` is hashed once: its digest is kept in
    ``<finexl cache>/fingerprints.json`` under its absolute path, with every file's size and modification time, and
    reused while they are all unchanged (a 4 GB base costs 10-30 s to hash).
    """
    path = Path(path)
    if path.is_file():
        files = [path]  # a file named on its own is always hashed, whatever its suffix
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix in FINGERPRINT_SUFFIXES and not p.name.startswith(".")
        )
    stats = [(str(f.relative_to(path) if path.is_dir() else f.name), f.stat()) for f in files]
    size = sum(st.st_size for _, st in stats)
    key = str(path.resolve())
    signature = [[name, st.st_size, st.st_mtime_ns] for name, st in stats]
    cached = _fingerprint_cache() if size >= FINGERPRINT_CACHE_BYTES else None
    entry = cached.get(key) if cached is not None else None
    if isinstance(entry, dict) and entry.get("files") == signature and isinstance(entry.get("digest"), str):
        return entry["digest"]
    digest = hashlib.sha256()
    for f, (name, _) in zip(files, stats, strict=True):
        digest.update(name.encode())
        with open(f, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    value = digest.hexdigest()[:16]
    if cached is not None:
        _store_fingerprint(key, {"files": signature, "digest": value})
    return value


def _fingerprint_cache_path() -> Path:
    return default_cache_dir() / FINGERPRINT_CACHE_FILE


def _fingerprint_cache() -> dict:
    path = _fingerprint_cache_path()
    if not path.is_file():
        return {}
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except CACHE_READ_ERRORS as err:  # damaged: every fingerprint is hashed again and the file written anew
        logger.warning("ignoring the damaged fingerprint cache %s: %s", path, err)
        return {}
    if not isinstance(cached, dict):
        logger.warning("ignoring the damaged fingerprint cache %s: not a JSON object", path)
        return {}
    return cached


def _store_fingerprint(key: str, entry: dict) -> None:
    cached = _fingerprint_cache()
    cached[key] = entry
    try:
        atomic_write_json(_fingerprint_cache_path(), cached)
    except OSError as err:  # a read-only cache costs time, not results
        logger.warning("could not keep the fingerprint of %s in %s: %s", key, _fingerprint_cache_path(), err)
