"""Suites of toy-world personalizations with known ground truth, built with finexl's own trainer.

A suite is a folder ``SUITE/models/<id>/`` of LoRAs (``pytorch_lora_weights.safetensors``, the training config)
each with ``truth.json``: the spec its data was shifted by, the level, the kind (``single``, ``null``, ...), and
the seed of its data. ``SUITE/suite.json`` lists the models. Building is resumable: a finished model folder is
kept, an interrupted one is only a hidden temporary folder that the next build removes and redoes.

Levels are data strengths (``colour=red@0.2`` ... ``@1.0``, suite ``single``), training steps (suite ``steps``: one
slow run per aspect on fully shifted data, its LoRA snapshots at 0.2 ... 1.0 of the run's steps) or LoRA scales
(suite ``scale``: one run per aspect on fully shifted data at the suites' usual learning rate, its LoRA sampled at
scale 0.2 ... 1.0): the spec's strength, the snapshot's step or the scale is the level's cause, and what the judge
measures on the outputs is what really changed (see :mod:`finexl.bench.measure`). The levels of a ``steps`` or
``scale`` family share one run, hence its side effects; the levels of a ``single`` family are independent runs.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from finexl.config import Config, setting
from finexl.errors import ConfigError
from finexl.loading import LORA_WEIGHTS_NAME, fingerprint_folder, load_pipeline
from finexl.presets import toy_base
from finexl.records import TRAIN_RECORD
from finexl.toyworld.dataset import render_set
from finexl.toyworld.personalization import parse_spec, render_personalization
from finexl.train.data import ImageSet
from finexl.utils import atomic_dir, atomic_write_json, give_default_mode
from finexl.validation import read_json

logger = logging.getLogger(__name__)

# One single-aspect shift per aspect the benchmark covers: (aspect, target). Decreases: size, saturation,
# brightness; increases: blur; categorical: the rest.
SINGLE_ASPECT_SHIFTS: tuple[tuple[str, str], ...] = (
    ("colour", "red"),
    ("pattern", "stripes"),
    ("pose", "upside-down"),
    ("position", "left"),
    ("fill", "outline"),
    ("size", "less"),
    ("blur", "more"),
    ("saturation", "less"),
    ("brightness", "less"),
)
LEVEL_STRENGTHS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
# Step levels: snapshots of one run at these fractions of ``BuildConfig.max_steps`` (evenly spaced, as the strengths)
LEVEL_STEP_FRACTIONS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
# The step-level runs' learning rate, constant, per aspect: slow enough that the five snapshots are distinct levels
# (why these values: docs/notes/2026-12-02-module-comments.md).
STEP_LEVEL_LR = {"pose": 5e-4}
STEP_LEVEL_LR_DEFAULT = 5e-5
STEP_LEVEL_LR_SCHEDULER = "constant"
# Scale levels: one LoRA (a run on fully shifted data at the trainer's learning rate) sampled at these LoRA scales
LEVEL_SCALES: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class SuiteModel:
    id: str
    kind: str  # "single" | "null" | "multi" | "dreambooth"
    spec: str | None  # the personalization spec (None: unshifted data)
    level: int  # 1..len(LEVEL_STRENGTHS) for single-aspect models, the proportion index for mixtures, else 0
    data_seed: int
    # Step levels: the model is the snapshot of its family's run at this fraction of the training steps (None: a
    # run of its own, trained to the end)
    snapshot: float | None = None
    # the LoRA scale the model is sampled at (scale levels: one LoRA at several scales)
    lora_scale: float = 1.0
    # the training run's learning rate and its schedule (None: the trainer's defaults)
    lr: float | None = None
    lr_scheduler: str | None = None


@dataclass
class BuildConfig(Config):
    """How every model of a suite is trained (800 images: why, in docs/notes/2026-12-02-module-comments.md)."""

    n_images: int = setting(800, minimum=1, help="training images per model")
    max_steps: int = setting(400, minimum=1, help="LoRA training steps per model")
    image_size: int = setting(32, minimum=8, cli=False, help="size of the rendered training images")


def _seed_of(model_id: str) -> int:
    return int.from_bytes(hashlib.sha256(model_id.encode()).digest()[:4], "little") % 1_000_000


def single_aspect_models(shifts=SINGLE_ASPECT_SHIFTS, strengths=LEVEL_STRENGTHS) -> list[SuiteModel]:
    models = []
    for aspect, target in shifts:
        for level, strength in enumerate(strengths, start=1):
            model_id = f"{aspect}-{target}-L{level}"
            spec = f"{aspect}={target}@{strength:g}"
            models.append(SuiteModel(model_id, "single", spec, level, _seed_of(model_id)))
    return models


def step_level_models(shifts=SINGLE_ASPECT_SHIFTS, fractions=LEVEL_STEP_FRACTIONS) -> list[SuiteModel]:
    """One family per shift: the snapshots of a single slow run (``STEP_LEVEL_LR``) on fully shifted data
    (``aspect=target@1``)."""
    models = []
    for aspect, target in shifts:
        seed = _seed_of(f"{aspect}-{target}-steps")
        for level, fraction in enumerate(fractions, start=1):
            model_id = f"{aspect}-{target}-S{level}"
            lr = STEP_LEVEL_LR.get(aspect, STEP_LEVEL_LR_DEFAULT)
            models.append(
                SuiteModel(
                    model_id,
                    "single",
                    f"{aspect}={target}@1",
                    level,
                    seed,
                    snapshot=fraction,
                    lr=lr,
                    lr_scheduler=STEP_LEVEL_LR_SCHEDULER,
                )
            )
    return models


def scale_level_models(shifts=SINGLE_ASPECT_SHIFTS, scales=LEVEL_SCALES) -> list[SuiteModel]:
    """One family per shift: the LoRA of one run on fully shifted data at the trainer's own learning rate (the data
    and seed of the step-level family, not its slow schedule) sampled at each LoRA scale."""
    models = []
    for aspect, target in shifts:
        seed = _seed_of(f"{aspect}-{target}-steps")
        for level, scale in enumerate(scales, start=1):
            model_id = f"{aspect}-{target}-W{level}"
            models.append(
                SuiteModel(model_id, "single", f"{aspect}={target}@1", level, seed, snapshot=1.0, lora_scale=scale)
            )
    return models


def null_models(n: int) -> list[SuiteModel]:
    return [SuiteModel(f"null-{i}", "null", None, 0, _seed_of(f"null-{i}")) for i in range(n)]


# Mixtures (the paper's multi-aspect protocol): shifts of 2 or 3 aspects at 3 proportions each.
MIXTURES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("colour", "red"), ("pattern", "stripes")),
    (("blur", "more"), ("brightness", "less")),
    (("fill", "outline"), ("size", "less")),
    (("colour", "red"), ("blur", "more"), ("saturation", "less")),
    (("pattern", "stripes"), ("fill", "outline"), ("brightness", "less")),
)
PROPORTIONS = {2: ((0.75, 0.25), (0.5, 0.5), (0.25, 0.75)), 3: ((0.6, 0.2, 0.2), (0.2, 0.6, 0.2), (0.2, 0.2, 0.6))}
# DreamBooth subjects: instance images all show one subject (fixed aspects), prompted "a sks shape".
SUBJECTS: tuple[dict[str, str], ...] = (
    {"shape": "heart", "colour": "purple"},
    {"shape": "house", "colour": "yellow", "fill": "outline"},
    {"shape": "moon", "colour": "blue", "pattern": "dots"},
    # six more, added after the first three had been measured (a held-out check of DreamBooth recall)
    {"shape": "triangle", "colour": "green"},
    {"shape": "arrow", "colour": "orange", "fill": "outline"},
    {"shape": "heart", "colour": "red", "pattern": "stripes"},
    {"shape": "house", "colour": "blue"},
    {"shape": "moon", "colour": "yellow", "fill": "outline"},
    {"shape": "triangle", "colour": "purple", "pattern": "checks"},
)
INSTANCE_PROMPT = "a sks shape"
CLASS_PROMPT = "a shape"  # the instance prompt without its identifier: the concept directions are built from it


def mixture_models() -> list[SuiteModel]:
    models = []
    for mix in MIXTURES:
        for p, proportions in enumerate(PROPORTIONS[len(mix)], start=1):
            spec = ",".join(f"{a}={t}@{s:g}" for (a, t), s in zip(mix, proportions, strict=True))
            model_id = "mix-" + "-".join(a for a, _ in mix) + f"-P{p}"
            models.append(SuiteModel(model_id, "multi", spec, p, _seed_of(model_id)))
    return models


def dreambooth_models() -> list[SuiteModel]:
    models = []
    for subject in SUBJECTS:
        spec = ",".join(f"{a}={v}@1" for a, v in subject.items())
        model_id = "dreambooth-" + "-".join(subject.values())
        models.append(SuiteModel(model_id, "dreambooth", spec, 0, _seed_of(model_id)))
    return models


SUITES = {
    "single": lambda: single_aspect_models(),
    "steps": lambda: step_level_models(),
    "scale": lambda: scale_level_models(),
    "null": lambda: null_models(8),
    "multi": mixture_models,
    "dreambooth": dreambooth_models,
    "quick": lambda: single_aspect_models(SINGLE_ASPECT_SHIFTS[:2], (0.4, 1.0)) + null_models(1),
    # one full-strength model per shift and one null (the single suite's top level): a collection to search
    "collection": lambda: single_aspect_models(strengths=(1.0,)) + null_models(1),
}


def suite_models(name: str) -> list[SuiteModel]:
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; known suites are {sorted(SUITES)}")
    return SUITES[name]()


def single_aspect_suites() -> list[str]:
    """The suites made of single-aspect level families only (``single``, ``steps``, ``scale``)."""
    return [name for name in SUITES if all(m.kind == "single" for m in suite_models(name))]


def _training_data(model: SuiteModel, cfg: BuildConfig):

    if model.spec is None:
        rendered = render_set(cfg.n_images, seed=model.data_seed, size=cfg.image_size)
    else:
        rendered = render_personalization(parse_spec(model.spec), cfg.n_images, model.data_seed, cfg.image_size)
    files = [f"{model.id}/{i:05d}.png" for i in range(len(rendered))]
    return ImageSet(images=rendered.images, captions=list(rendered.captions), files=files)


def _train_config(model: SuiteModel, cfg: BuildConfig, **settings):
    """The trainer's settings for a suite model's run: the build's steps, the model's seed and learning rate."""
    from finexl.train.trainer import TrainConfig

    schedule = {k: v for k, v in (("lr", model.lr), ("lr_scheduler", model.lr_scheduler)) if v is not None}
    return TrainConfig(max_steps=cfg.max_steps, seed=model.data_seed, **schedule, **settings)


def _truth(model: SuiteModel, cfg: BuildConfig, seconds: float, **extra) -> dict:
    """A built model's ``truth.json``: its spec and level, the build settings, the time it took, and the CPU threads
    torch trained with (another thread count sums in another order: LoRA weights that differ in the last bits)."""
    import torch

    threads = torch.get_num_threads()
    return {**asdict(model), **extra, "build": asdict(cfg), "seconds": seconds, "torch_threads": threads}


def _run_of(model: SuiteModel) -> tuple:
    """What makes two step-level models snapshots of one training run."""
    return model.spec, model.data_seed, model.lr, model.lr_scheduler


def build_model(model: SuiteModel, folder: Path, cfg: BuildConfig, base: Path, progress: bool = False) -> dict:
    """Render the model's data, train its LoRA into ``folder`` (atomically) and write ``truth.json``."""
    from finexl.train.trainer import train

    t0 = time.perf_counter()
    data = _training_data(model, cfg)
    pipe = load_pipeline(base)
    instance_prompt = INSTANCE_PROMPT if model.kind == "dreambooth" else None
    train_cfg = _train_config(model, cfg, instance_prompt=instance_prompt)
    with atomic_dir(folder) as tmp:
        train(pipe, data, train_cfg, tmp, base_fingerprint=fingerprint_folder(base), progress=progress)
        truth = _truth(model, cfg, round(time.perf_counter() - t0, 1))
        atomic_write_json(tmp / "truth.json", truth)
    return truth


def snapshot_steps(model: SuiteModel, cfg: BuildConfig) -> int:
    """The training step at which a step-level model is its run's snapshot."""
    if not 0 < model.snapshot <= 1:
        raise ConfigError(f"{model.id}: a snapshot lies in (0, 1] of the run, got {model.snapshot}")
    return max(1, round(model.snapshot * cfg.max_steps))


def build_family(
    models: list[SuiteModel], folders: list[Path], cfg: BuildConfig, base: Path, progress: bool = False
) -> list[dict]:
    """Train the one run behind a family of step-level models (same spec, data and learning rate) and write each
    snapshot into its model's folder (atomically, with ``truth.json``); returns their truth records."""
    from finexl.train.trainer import train

    first = models[0]
    if any(m.snapshot is None or _run_of(m) != _run_of(first) for m in models):
        raise ConfigError("a family is step-level models of one run: one spec, data seed and learning rate")
    t0 = time.perf_counter()
    data = _training_data(first, cfg)
    steps = [snapshot_steps(m, cfg) for m in models]
    # the run always goes to max_steps, whichever levels are missing: the learning-rate schedule spans the whole run,
    # so a snapshot is the same whether its family is built at once or finished after an interruption
    train_cfg = _train_config(first, cfg, snapshot_steps=tuple(steps))
    run_dir = Path(tempfile.mkdtemp(dir=folders[0].parent, prefix=".run-", suffix=".tmp"))
    give_default_mode(run_dir, folder=True)
    records = []
    try:
        train(
            load_pipeline(base), data, train_cfg, run_dir, base_fingerprint=fingerprint_folder(base), progress=progress
        )
        seconds = round(time.perf_counter() - t0, 1)
        for model, folder, step in zip(models, folders, steps, strict=True):
            snap = run_dir / "snapshots" / f"step-{step:06d}"
            with atomic_dir(folder) as tmp:
                for name in (LORA_WEIGHTS_NAME, TRAIN_RECORD):
                    shutil.copy2(snap / name, tmp / name)
                truth = _truth(model, cfg, seconds, steps=step)
                atomic_write_json(tmp / "truth.json", truth)
            records.append(truth)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return records


def build_suite(
    name: str, out: str | Path, cfg: BuildConfig | None = None, base: str | Path | None = None, progress: bool = True
) -> list[dict]:
    """Build (or finish building) suite ``name`` in ``out``; returns the truth record of every model."""

    cfg = cfg or BuildConfig()
    base = Path(base) if base else toy_base()
    out = Path(out)
    models = suite_models(name)
    runs: dict[tuple, list[tuple[int, float]]] = {}
    for m in models:
        if m.snapshot is not None:
            runs.setdefault(_run_of(m), []).append((snapshot_steps(m, cfg), m.lora_scale))
    if any(len(set(levels)) < len(levels) for levels in runs.values()):
        steps = sorted(s for s, _ in next(iter(runs.values())))
        raise ConfigError(
            f"max_steps={cfg.max_steps} is too few for suite {name!r}: two of its step levels would be "
            f"the same snapshot (levels at {steps} steps)"
        )
    (out / "models").mkdir(parents=True, exist_ok=True)
    for stale in (out / "models").glob(".*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    records = {}
    for model in tqdm(models, desc=f"build {name}", disable=not progress):
        folder = out / "models" / model.id
        if model.id in records:
            continue  # built with its family
        if (folder / "truth.json").is_file():
            records[model.id] = read_json(folder / "truth.json", "truth", "truth record")
            built_with = records[model.id].get("build")
            if built_with != asdict(cfg):  # one suite, one recipe: never a mix of two builds' settings
                raise ConfigError(
                    f"suite {name!r} in {out} holds {model.id} built with {built_with}, not {asdict(cfg)}: finish it "
                    "with the same --n-images and --max-steps, or build into another --out"
                )
            continue
        if model.snapshot is None:
            logger.info("training %s (%s)", model.id, model.spec or "unshifted data")
            records[model.id] = build_model(model, folder, cfg, base)
            continue
        # a step level: its family's run makes every level not yet built (a finished one is kept)
        family = [
            m
            for m in models
            if m.snapshot is not None
            and _run_of(m) == _run_of(model)
            and not (out / "models" / m.id / "truth.json").is_file()
        ]
        logger.info("training %s for its snapshots %s", model.spec, ", ".join(m.id for m in family))
        built = build_family(family, [out / "models" / m.id for m in family], cfg, base)
        records.update({m.id: r for m, r in zip(family, built, strict=True)})
    records = [records[m.id] for m in models]
    atomic_write_json(out / "suite.json", {"suite": name, "build": asdict(cfg), "models": [r["id"] for r in records]})
    return records
