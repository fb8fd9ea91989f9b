"""Explain a whole collection: ``explain_many(manifest, out, config)``.

Stages:
    1. read the manifest (a duplicate id or an unknown column stops here, before any work) and index any finished
       folder the index lacks (a run killed between a folder and its index row);
    2. per base: one :class:`~finexl.explanation.pipeline.ExplainPipeline`, whose base images, null images, their
       embeddings and the text directions are made once (``prepare_base``) and reused for every model;
    3. per model: check it (a bad row, a missing or corrupt file, a LoRA for another base are recorded as failed
       and the run goes on), skip it if its folder was made with the same settings and files (the run digest), else
       explain it, locally or as a Ray task;
    4. write ``OUT/models/ID/`` whole (atomically: explanation.json, samples, report, embeddings.npz), then its index
       row in one transaction.

Layout of ``OUT``: ``models/ID/`` per model, ``bases/FINGERPRINT/embeddings.npz`` (the base's and null embeddings
and the prompts and seeds, for search), ``index.sqlite``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from finexl.collection.index import (
    BASES_DIR,
    EMBEDDINGS_FILE,
    INDEX_FILE,
    MODELS_DIR,
    connect,
    digests,
    put_explained,
    put_failed,
    reconcile,
    record_failure,
)
from finexl.collection.manifest import Entry, read_manifest
from finexl.errors import ConfigError, FinexlError, InputError
from finexl.explanation.pipeline import ExplainConfig, ExplainPipeline, Personalization
from finexl.report import write_report
from finexl.utils import CACHE_READ_ERRORS, atomic_dir, atomic_write_bytes, atomic_write_json, writing

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
LAST_RUN_FILE = "last_run.json"  # what the last run explained, skipped and failed, and its seconds
# settings that do not change an explanation's numbers: not part of the run digest
VOLATILE = ("cache_dir", "device", "api_key_env")


@dataclass
class ManyResult:
    explained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    base_seconds: float = 0.0  # spent on the bases' part (images, embeddings, directions), once per base

    def summary(self) -> str:
        return (
            f"explained {len(self.explained)}, skipped {len(self.skipped)} (already done), failed "
            f"{len(self.failed)}, in {self.seconds:.0f} s"
        )


def run_digest(config: ExplainConfig, base_fingerprint: str, model_fingerprint: str, entry: Entry) -> str:
    """What makes a model's explanation: the settings that change numbers, the base, the model files, the scale."""
    settings = {k: v for k, v in asdict(config).items() if k not in VOLATILE}
    settings["sampler"].pop("batch_size")  # batching gives the same images
    if not entry.stack:  # the interaction is explained for stacks only (a stack's fingerprint holds every LoRA's)
        settings["interaction"] = False
    key = {"settings": settings, "base": base_fingerprint, "model": model_fingerprint, "scale": entry.scale}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _target(entry: Entry) -> Personalization:
    if entry.kind == "model":
        return Personalization(model=entry.path)
    if entry.stack:
        return Personalization.of([p for p, _ in entry.stack], scale=[s for _, s in entry.stack])
    return Personalization(lora=entry.path, scale=entry.scale)


def _explain(pipeline: ExplainPipeline, entry: Entry):
    """One row: a stack with its interaction where the config asks for it (the other rows without)."""
    target = _target(entry)
    if target.others:
        lora, scale = [p for p, _ in target.loras], [s for _, s in target.loras]
        return pipeline(lora=lora, scale=scale, interaction=pipeline.config.interaction)
    return pipeline(lora=target.lora, model=target.model, scale=target.scale, interaction=False)


# one pipeline per base and per worker process, reused across the tasks a Ray worker runs
_WORKER_PIPELINES: dict[str, ExplainPipeline] = {}


def _ray_task(config: ExplainConfig, entry: Entry, threads: int):
    """A Ray task: explain one model; errors come back as values (their message), not as Ray's wrapped errors."""
    import torch

    torch.set_num_threads(max(1, threads))
    key = json.dumps(asdict(config), sort_keys=True, default=str)
    try:
        if key not in _WORKER_PIPELINES:
            _WORKER_PIPELINES[key] = ExplainPipeline(config)
        return _explain(_WORKER_PIPELINES[key], entry), None
    except Exception as err:  # noqa: BLE001 - recorded as this model's failure, the run goes on
        return None, _error_text(err)


def _error_text(err: Exception) -> str:
    if isinstance(err, FinexlError):
        return str(err)
    logger.warning("internal error:\n%s", "".join(traceback.format_exception(err)))
    return f"internal error ({type(err).__name__}): {err}"


class LocalExecutor:
    def map(self, pipeline: ExplainPipeline, entries: list[Entry]) -> Iterator[tuple[Entry, object, str | None]]:
        for entry in entries:
            try:
                yield entry, _explain(pipeline, entry), None
            except Exception as err:  # noqa: BLE001 - one model's failure is recorded, the run goes on
                yield entry, None, _error_text(err)

    def close(self) -> None:
        pass


class RayExecutor:
    """Each model is a Ray task with ``num_cpus``/``num_gpus`` per task; results come back as they finish. Uses the
    Ray runtime already started in this process, else ``ray.init(address)`` (None: a local one)."""

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0):
        try:
            import ray
        except ImportError as err:
            raise ConfigError("the ray executor needs Ray: pip install -e '.[ray]'") from err
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, log_to_driver=False)
        self.task = ray.remote(_ray_task).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self.threads = max(1, int(num_cpus))

    def map(self, pipeline: ExplainPipeline, entries: list[Entry]) -> Iterator[tuple[Entry, object, str | None]]:
        pending = {self.task.remote(pipeline.config, e, self.threads): e for e in entries}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            entry = pending.pop(done[0])
            try:
                explanation, error = self.ray.get(done[0])
            except Exception as err:  # noqa: BLE001 - a worker that died: this model fails, the run goes on
                explanation, error = None, f"Ray task failed: {type(err).__name__}: {err}"
            yield entry, explanation, error

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def explain_many(
    manifest: str | Path,
    out: str | Path,
    config: ExplainConfig | None = None,
    *,
    executor: str = "local",
    ray_address: str | None = None,
    num_cpus_per_task: float = 1,
    num_gpus_per_task: float = 0,
    report: bool = True,
    progress: bool = False,
) -> ManyResult:
    """Explain every model of ``manifest`` into ``out`` (see the module docstring); resumable.

    ``config`` holds the settings of every explanation (its ``base`` is the default for rows without one).
    """

    t0 = time.perf_counter()
    config = config or ExplainConfig()
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    # 1. the manifest, and the index made consistent with the folders
    entries = read_manifest(manifest)
    out = Path(out)
    if out.is_file():
        raise InputError(f"--out {out} is a file; give a folder")
    with writing(out):
        (out / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    result = ManyResult()
    with connect(out / INDEX_FILE) as conn:
        if reconcile(conn, out):
            logger.info("indexed finished folders the index lacked")
        known = digests(conn)
        for entry in entries:
            if entry.problem:
                _record_failure(conn, out, entry, entry.problem, result)
        groups: dict[str | None, list[Entry]] = {}
        for entry in entries:
            if not entry.problem:
                groups.setdefault(entry.base, []).append(entry)
        pipelines = {}
        todo: list[tuple[ExplainPipeline, Entry, str]] = []
        # 2-3. one pipeline per base; check each model and skip the finished ones, before any image is made
        for base, members in groups.items():
            try:
                pipelines[base] = ExplainPipeline(replace(config, base=base) if base else config, progress=False)
            except FinexlError as err:
                for entry in members:
                    _record_failure(conn, out, entry, f"base {base}: {err}", result)
                continue
            pipe = pipelines[base]
            for entry in members:
                try:
                    checked = pipe.check_personalization(_target(entry))
                except FinexlError as err:
                    _record_failure(conn, out, entry, str(err), result)
                    continue
                digest = run_digest(pipe.config, pipe.base_fingerprint, checked.fingerprint, entry)
                if known.get(entry.id) == digest and (out / MODELS_DIR / entry.id / "explanation.json").is_file():
                    result.skipped.append(entry.id)
                else:
                    todo.append((pipe, entry, digest))
        bar = tqdm(total=len(todo), desc="explain-many", unit="model", disable=not progress)
        runner = RayExecutor(ray_address, num_cpus_per_task, num_gpus_per_task) if executor == "ray" else None
        try:
            for pipe in {id(p): p for p, _, _ in todo}.values():
                members = [(e, d) for p, e, d in todo if p is pipe]
                bar.set_postfix_str(f"base {pipe.base_dir.name}: images of the base")
                t_base = time.perf_counter()
                try:
                    pipe.prepare_base()
                    result.base_seconds += time.perf_counter() - t_base
                except FinexlError as err:
                    for entry, _ in members:
                        _record_failure(conn, out, entry, f"base {pipe.base_dir}: {err}", result)
                        bar.update()
                    continue
                bar.set_postfix_str(f"base {pipe.base_dir.name}")
                digest_of = {e.id: d for e, d in members}
                for entry, explanation, error in (runner or LocalExecutor()).map(pipe, [e for e, _ in members]):
                    if error is not None:
                        _record_failure(conn, out, entry, error, result)
                    else:
                        _write_model(conn, out, pipe, entry, digest_of[entry.id], explanation, report)
                        result.explained.append(entry.id)
                    bar.update()
            # a base whose models were all done before still gets its embeddings file back if it was lost or damaged
            for base, pipe in pipelines.items():
                if any(e.id in result.skipped for e in groups[base]):
                    try:
                        write_base(out, pipe)
                    except FinexlError as err:
                        logger.warning("could not write the embeddings of base %s for search: %s", pipe.base_dir, err)
        finally:
            bar.close()
            if runner is not None:
                runner.close()
    result.seconds = time.perf_counter() - t0

    atomic_write_json(out / LAST_RUN_FILE, asdict(result))
    return result


def _record_failure(conn, out: Path, entry: Entry, error: str, result: ManyResult) -> None:

    logger.warning("%s failed: %s", entry.id, error)
    record_failure(out, _entry_record(entry), error)
    put_failed(conn, _entry_record(entry), error)
    result.failed[entry.id] = error


def write_base(out: Path, pipe: ExplainPipeline) -> None:
    """``OUT/bases/FINGERPRINT/embeddings.npz``: the base's (and null) embeddings of every pair the run may draw
    (samples='auto' stops each model at its own count; search takes the first n), unless the file already holds
    them; a missing, damaged or shorter file is written again."""

    base_file = out / BASES_DIR / pipe.base_fingerprint / EMBEDDINGS_FILE
    wanted = list(range(pipe.config.seed, pipe.config.seed + pipe.config.n_pairs))
    if _stored_seeds(base_file)[: len(wanted)] == wanted:
        return
    prompts, seeds, base, null = pipe.base_embeddings()
    buffer = io.BytesIO()
    arrays = {"base": base.astype(np.float32), "prompts": np.array(prompts), "seeds": np.array(seeds)}
    if null is not None:
        arrays["null"] = null.astype(np.float32)
    np.savez(buffer, **arrays)
    atomic_write_bytes(base_file, buffer.getvalue())


def _stored_seeds(path: Path) -> list[int]:
    """The seeds of the pairs in a base's embeddings file; none when it is missing or damaged (it is then written
    again, with a warning for a damaged one)."""

    if not path.is_file():
        return []
    try:
        with np.load(path) as saved:
            seeds = [int(s) for s in saved["seeds"]]
            if len(saved["base"]) != len(seeds):
                raise ValueError(f"{len(saved['base'])} embeddings for {len(seeds)} seeds")
            return seeds
    except CACHE_READ_ERRORS as err:
        logger.warning("writing again the damaged %s: %s", path, err)
        return []


def _entry_record(entry: Entry) -> dict:
    return {
        "id": entry.id,
        "path": entry.shown_path,
        "base": entry.base,
        "scale": entry.scale,
        "tags": list(entry.tags),
        "kind": entry.kind,
        **({"stack": [{"lora": p, "scale": s} for p, s in entry.stack]} if entry.stack else {}),
    }


def _write_model(conn, out: Path, pipe: ExplainPipeline, entry: Entry, digest: str, explanation, report: bool) -> None:
    """The model's folder, whole, then its index row (one transaction)."""

    if explanation.sentences is None:
        explanation.narrate()  # templated sentences, stored for the index and search results
    emb = explanation.embeddings
    vdiv = (emb.tuned - emb.base).mean(axis=0)
    explanation.settings["collection"] = {"entry": _entry_record(entry), "digest": digest}
    write_base(out, pipe)
    folder = out / MODELS_DIR / entry.id
    with atomic_dir(folder) as tmp:
        explanation.save(tmp, overwrite=True)
        if report:
            write_report(tmp, overwrite=True)
        arrays = {"tuned": emb.tuned.astype(np.float32), "vdiv": vdiv.astype(np.float32)}
        if explanation.settings.get("prompts") != pipe.config.to_dict().get("prompts"):
            # explained on prompts of its own (a DreamBooth model's class prompt): its own base images, for search
            arrays["base"] = emb.base.astype(np.float32)
            if emb.null is not None:
                arrays["null"] = emb.null.astype(np.float32)
        np.savez(tmp / EMBEDDINGS_FILE, **arrays)
    put_explained(conn, _entry_record(entry), str(folder.relative_to(out)), digest, explanation.to_dict(), vdiv)
    record_failure(out, _entry_record(entry), None)
