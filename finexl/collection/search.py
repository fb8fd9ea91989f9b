"""Find models by what they do: ``search(folder, "makes everything watercolour")``.

The query becomes a direction in the space the explanations live in, the same way a concept of the bank does:
f(q) = mean over the run's direction prompts of Enc_text("prompt, q") - Enc_text(prompt). Each model is scored by
how far its outputs moved along it, exactly as an aspect is (``scoring.py``): the mean paired move of its image
embeddings along f(q)/|f(q)| as a share of how far the images spread along it (q95 - q05), a bootstrap interval over
its pairs, and a null threshold from the base against itself (other seeds, pairs randomly swapped). A model is a
*match* when its interval lies above that threshold. Filters (``colour=red``, ``blur>0.3``) act on the stored scores.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finexl.collection.index import BASES_DIR, EMBEDDINGS_FILE, MODELS_DIR, connect, open_existing
from finexl.errors import ConfigError, InputError, MissingInputError
from finexl.explanation.concepts import compose, direction_prompts
from finexl.explanation.embed import load_embedder
from finexl.explanation.result import STACK_VERDICT_ORDER, Explanation, format_stack, format_sweep, format_trigger
from finexl.presets import get_preset
from finexl.stats import bootstrap_indices, null_threshold, paired_moves, percentile_interval, sign_flips, spreads
from finexl.utils import CACHE_READ_ERRORS

FILTER = re.compile(r"^\s*([\w-]+)\s*(?:(=|>|<|@|:)\s*(.+?))?\s*$")


@dataclass
class Hit:
    id: str
    score: float
    interval: list[float]
    threshold: float | None
    match: bool
    changed: list[str]
    sentences: str | None
    path: str | None
    tags: list[str]


def query_direction(embedder, query: str, prompts: list[str]) -> np.ndarray:
    """Unit f(query) over ``prompts`` (see the module docstring)."""

    query = query.strip()
    if not query:
        raise ConfigError("the search query is empty")
    used = direction_prompts(prompts)
    window = embedder.text_window
    if window is not None and embedder.count_tokens("a") is not None:
        longest = max(used, key=lambda p: embedder.count_tokens(compose(p, query)))
        n = embedder.count_tokens(compose(longest, query))
        if n > window:  # a query cut at the window would search for part of what was asked
            raise ConfigError(
                f"the query is {embedder.count_tokens(query)} tokens; after the prompt {longest[:40]!r} it needs {n} "
                f"of the {window} the CLIP text encoder reads: shorten it"
            )
    d = (embedder.embed_texts([compose(p, query) for p in used]) - embedder.embed_texts(used)).mean(axis=0)
    norm = np.linalg.norm(d)
    if norm == 0:
        raise InputError(f"the query {query!r} gives no direction with this CLIP (a text cut at its window?)")
    return d / norm


def move_along(
    base: np.ndarray,
    tuned: np.ndarray,
    null: np.ndarray | None,
    u: np.ndarray,
    n_bootstrap: int = 200,
    n_null: int = 200,
    confidence: float = 0.9,
    null_quantile: float = 0.95,
    seed: int = 0,
) -> dict:
    """Score, interval and null threshold of a model's move along the unit direction ``u``: an aspect's statistics
    (``finexl.explanation.scoring``) for a single direction, from the shared ones of :mod:`finexl.stats`."""
    if len(base) != len(tuned) or (null is not None and len(null) != len(base)):
        raise ValueError(
            f"unpaired embeddings: {len(base)} base, {len(tuned)} personalized, "
            f"{None if null is None else len(null)} null"
        )
    spread = spreads(np.concatenate([base, tuned]), u[None, :])[0]
    d = paired_moves(base, tuned, u)
    rng = np.random.default_rng(seed)
    boot = np.array([d[idx].mean() for idx in bootstrap_indices(rng, len(d), n_bootstrap)]) / spread
    low, high = np.clip(percentile_interval(boot, confidence), -1, 1)
    threshold = None
    if null is not None:
        dn = paired_moves(base, null, u)  # the base against itself; a swap of a pair flips its sign
        flips = sign_flips(rng, n_null, len(dn))
        threshold = float(null_threshold(np.abs((flips * dn).mean(axis=1) / spread), null_quantile))
    score = float(np.clip(d.mean() / spread, -1, 1))
    return {
        "score": score,
        "interval": [float(low), float(high)],
        "threshold": threshold,
        "match": bool(threshold is not None and low > threshold),
    }


def parse_filter(text: str, aspects: list[str]) -> tuple[str, str | None, str | None]:
    m = FILTER.match(text)
    if not m:
        raise ConfigError(
            f"filter {text!r}: expected ASPECT, ASPECT=WORD, ASPECT>NUMBER, ASPECT<NUMBER, ASPECT@SCALE or "
            "ASPECT:VERDICT"
        )
    name, op, value = m.groups()
    if name not in aspects:
        raise ConfigError(f"filter {text!r}: unknown aspect {name!r}; the index has {', '.join(aspects)}")
    if op == ":" and value not in STACK_VERDICT_ORDER:
        raise ConfigError(f"filter {text!r}: a stack's verdict is one of {', '.join(STACK_VERDICT_ORDER)}")
    if op in ("<", ">", "@"):
        try:
            float(value)
        except ValueError as err:
            raise ConfigError(f"filter {text!r}: {value!r} is not a number") from err
    return name, op, value


def _filtered_ids(conn: sqlite3.Connection, filters: list[str]) -> set[str]:
    ids = {r[0] for r in conn.execute("SELECT id FROM models WHERE status = 'explained'")}
    aspects = [r[0] for r in conn.execute("SELECT DISTINCT aspect FROM aspects ORDER BY aspect")]
    for text in filters:
        name, op, value = parse_filter(text, aspects)
        if op is None:
            rows = conn.execute("SELECT model_id FROM aspects WHERE aspect = ? AND changed = 1", (name,))
        elif op == "=":  # CHANGED toward the word: its reported direction, or that concept of the aspect rising
            rows = conn.execute(
                "SELECT a.model_id FROM aspects a WHERE a.aspect = ? AND a.changed = 1 AND (lower(a.toward) = "
                "lower(?) OR EXISTS (SELECT 1 FROM concepts c WHERE c.model_id = a.model_id AND c.aspect = a.aspect "
                "AND lower(c.phrase) = lower(?) AND c.low > 0))",
                (name, value, value),
            )
        elif op == "@":  # a weight sweep's onset at or below the scale: CHANGED by then
            rows = conn.execute(
                "SELECT model_id FROM sweep WHERE aspect = ? AND onset IS NOT NULL AND onset <= ?",
                (name, float(value)),
            )
        elif op == ":":  # a stack whose interaction on the aspect has this verdict
            rows = conn.execute("SELECT model_id FROM stack WHERE aspect = ? AND verdict = ?", (name, value))
        else:
            query = f"SELECT model_id FROM aspects WHERE aspect = ? AND score {op} ?"  # op is '<' or '>'
            rows = conn.execute(query, (name, float(value)))
        ids &= {r[0] for r in rows}
    return ids


def search(
    folder: str | Path, query: str, top: int = 10, filters: list[str] | None = None, device: str = "cpu", seed: int = 0
) -> list[Hit]:
    """Models of the index in ``folder`` ranked by how far they move their outputs toward ``query``."""

    path = open_existing(folder)
    folder = Path(folder)
    with connect(path) as conn:
        ids = _filtered_ids(conn, filters or [])
        rows = conn.execute(
            "SELECT id, settings, clip_fingerprint, base_fingerprint, changed, sentences, path, tags FROM models "
            "WHERE status = 'explained' ORDER BY id"
        ).fetchall()
    rows = [r for r in rows if r[0] in ids]
    if not rows:
        return []
    clips = {r[2] for r in rows}
    if len(clips) > 1:
        raise InputError(f"the index holds models explained with {len(clips)} CLIPs: not one scale; search each")
    settings = json.loads(rows[0][1])
    embedder = load_embedder(settings.get("clip") or get_preset(settings["preset"]).clip, device=device)
    if embedder.fingerprint != rows[0][2]:
        raise InputError(
            f"the CLIP the index was made with ({rows[0][2]}) is not the one found now ({embedder.fingerprint})"
        )
    bases: dict[str, dict] = {}
    directions: dict[tuple, np.ndarray] = {}
    hits = []
    for model_id, settings_json, _, base_fp, changed, sentences, model_path, tags in rows:
        if base_fp not in bases:
            bases[base_fp] = _load_base(folder, base_fp)
        base = bases[base_fp]
        s = json.loads(settings_json)
        tuned_file = folder / MODELS_DIR / model_id / EMBEDDINGS_FILE
        try:
            with np.load(tuned_file) as saved:
                tuned = saved["tuned"].astype(np.float64)
                own = {k: saved[k].astype(np.float64) for k in ("base", "null") if k in saved.files}
        except CACHE_READ_ERRORS as err:
            raise InputError(f"{tuned_file} is missing or damaged ({err}); rerun finexl explain-many") from err
        # the query's direction over the prompts the model's directions were built from: its direction prompts,
        # else the prompts of its own (a DreamBooth model's class prompt), else the run's (with the base's embeddings)
        prompts = s["direction_prompts"] if isinstance(s.get("direction_prompts"), list) else base["prompts"]
        if own and not isinstance(s.get("direction_prompts"), list):
            prompts = s["prompts"]
        if tuple(prompts) not in directions:
            directions[tuple(prompts)] = query_direction(embedder, query, prompts)
        n = len(tuned)
        if own:  # a model explained on prompts of its own stores its own base (and null) embeddings
            base_e, null = own.get("base"), own.get("null")
            if base_e is None or base_e.shape != tuned.shape:
                raise InputError(f"{tuned_file} holds {tuned.shape} embeddings and a base of another shape: rerun "
                                 "finexl explain-many")  # fmt: skip
        else:
            # models stop at different pair counts (samples='auto'): pair i is the same (prompt, seed) for every
            # model, so a model with n pairs is compared with the base's first n
            if tuned.ndim != 2 or n > len(base["base"]) or tuned.shape[1] != base["base"].shape[1]:
                raise InputError(
                    f"{tuned_file} holds {tuned.shape} embeddings; the base's file holds {base['base'].shape}: the "
                    "index is inconsistent, rerun finexl explain-many"
                )
            if "seeds" in base and list(base["seeds"][:n]) != list(range(s.get("seed", 0), s.get("seed", 0) + n)):
                raise InputError(
                    f"{model_id} was explained with seeds from {s.get('seed')}, the stored base images with seeds "
                    f"from {base['seeds'][0]}: rerun finexl explain-many with one --seed for the whole collection"
                )
            base_e, null = base["base"][:n], None if base.get("null") is None else base["null"][:n]
        moved = move_along(
            base_e,
            tuned,
            null,
            directions[tuple(prompts)],
            n_bootstrap=s.get("n_bootstrap", 200),
            n_null=s.get("n_null", 200),
            confidence=s.get("confidence", 0.9),
            null_quantile=s.get("null_quantile", 0.95),
            seed=seed,
        )
        hits.append(
            Hit(
                model_id,
                moved["score"],
                moved["interval"],
                moved["threshold"],
                moved["match"],
                json.loads(changed or "[]"),
                sentences,
                model_path,
                json.loads(tags or "[]"),
            )
        )
    hits.sort(key=lambda h: (not h.match, -h.score))
    return hits[:top]


def _load_base(folder: Path, fingerprint: str) -> dict:
    path = folder / BASES_DIR / fingerprint / EMBEDDINGS_FILE
    try:
        with np.load(path) as saved:
            out = {"base": saved["base"].astype(np.float64), "prompts": [str(p) for p in saved["prompts"]]}
            if "seeds" in saved.files:
                out["seeds"] = [int(x) for x in saved["seeds"]]
            if "null" in saved.files:
                out["null"] = saved["null"].astype(np.float64)
    except FileNotFoundError as err:
        raise MissingInputError(f"{path} is missing: the base's embeddings were not written") from err
    except CACHE_READ_ERRORS as err:
        raise InputError(f"{path} is damaged ({err}); rerun finexl explain-many to write it again") from err
    return out


def show(folder: str | Path, model_id: str) -> str:
    """One model of the index, in words: its status (and error), its table and sentences."""

    path = open_existing(folder)
    with connect(path) as conn:
        row = conn.execute("SELECT status, error, path, folder, tags FROM models WHERE id = ?", (model_id,)).fetchone()
    if row is None:
        raise InputError(f"no model {model_id!r} in {path}")
    status, error, model_path, model_folder, tags = row
    head = f"{model_id}: {status}  ({model_path}; tags: {', '.join(json.loads(tags or '[]')) or '-'})"
    if status != "explained":
        return f"{head}\nerror: {error}"
    e = Explanation.from_json(Path(folder) / model_folder)
    text = (e.sentences or {}).get("text") or e.narrate().text
    parts = [head, e.table(), text]
    if e.sweep:
        parts.append(format_sweep(e.sweep))
    if e.stack:
        parts.append(format_stack(e.stack))
    if e.trigger:
        parts.append(format_trigger(e.to_dict()))
    return "\n\n".join(parts)
