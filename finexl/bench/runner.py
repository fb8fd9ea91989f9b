"""Run every method on every model of built suites, on the same images and embeddings.

For each model: sample base and personalized on the same prompts and seeds (cached; DreamBooth models on their
instance prompt, the others on the toy world's neutral prompts), read both with the judge (what really changed),
embed with the toy CLIP once (DreamBooth's concept directions from the class prompt, the instance prompt without its
identifier), and score with every method, all through the one explain pipeline
(:class:`finexl.explanation.pipeline.ExplainPipeline`). The records feed :mod:`finexl.bench.metrics`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from finexl.bench.measure import compare_readings
from finexl.bench.metrics import TRUTHS, all_metrics, compare_methods
from finexl.bench.suites import CLASS_PROMPT, INSTANCE_PROMPT, suite_models
from finexl.config import Config, setting
from finexl.errors import ConfigError, InputError
from finexl.explanation.decompose import ESTIMATORS
from finexl.sampling import SamplerConfig
from finexl.toyworld.personalization import parse_spec
from finexl.validation import read_json

logger = logging.getLogger(__name__)

UNPAIRED_SEED_OFFSET = 2_000_000


def method_list(text: str) -> tuple[str, ...]:
    """``--methods finexl,paper`` (an argparse type)."""
    return tuple(m.strip() for m in text.split(",") if m.strip())


@dataclass
class BenchConfig(Config):
    """How the benchmark explains every model of the suites."""

    methods: tuple[str, ...] = setting(
        tuple(ESTIMATORS), parse=method_list, metavar="NAMES", help="comma-separated methods", default_text="all"
    )
    samples: int = setting(128, minimum=2, help="image pairs per model")
    n_bootstrap: int = setting(
        200,
        minimum=10,
        flag="--bootstrap",
        help="bootstrap resamples (and the null's swaps, unless --n-null)",
    )
    n_null: int = setting(200, minimum=10, help="random swaps of the null pairs")
    truth: str = setting(
        "judge",
        choices=TRUTHS,
        help="what counts as changed for precision, recall and F1: the aspects the judge reads moving past its own "
        "null (judge), the spec's shifted aspects (spec), or the judge's change above a fixed 0.10 (fixed; both "
        "for comparison only)",
    )
    seed: int = setting(0, minimum=0, help="seed of the first pair")
    unpaired: int = setting(0, minimum=0, help="models on which to also compare paired and unpaired intervals")
    cache_dir: str | None = setting(
        None, flag="--cache", help="image cache folder", default_text="$FINEXL_CACHE or ~/.cache/finexl"
    )
    device: str = setting("cpu", help="torch device of the models")
    sampler: SamplerConfig = setting(default_factory=SamplerConfig, help="how the images are sampled")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in ESTIMATORS]
        if unknown or not self.methods:
            raise ConfigError(f"unknown method(s) {unknown or '(none given)'}; choose from {', '.join(ESTIMATORS)}")


class SuiteError(InputError):
    """A suite folder that is missing models or files."""


def load_truths(suites_dir: str | Path, names: list[str]) -> list[dict]:
    """The truth record of every model of the named suites; a listed model without its files is an error."""

    out = []
    for name in names:
        folder = Path(suites_dir) / name
        if not (folder / "models").is_dir():
            raise SuiteError(f"suite {name!r} is not built in {folder} (run: finexl bench build {name})")
        for model in suite_models(name):
            path = folder / "models" / model.id
            if not (path / "truth.json").is_file() or not (path / "pytorch_lora_weights.safetensors").is_file():
                raise SuiteError(f"suite {name!r}: model {model.id} is missing from {folder / 'models'}")
            truth = read_json(path / "truth.json", "truth", "truth record")
            out.append(truth | {"path": str(path), "suite": name})
    return out


def spec_shifts(spec: str | None) -> list[tuple[str, str, float]]:
    if not spec:
        return []

    return [(s.aspect, s.target, s.strength) for s in parse_spec(spec)]


def run_models(truths: list[dict], cfg: BenchConfig, progress: bool = True) -> list[dict]:
    """Explain every suite model with every method through the explain pipeline, and read it with the judge."""
    from finexl.explanation.pipeline import ExplainConfig, ExplainPipeline, OtherBaseError, Personalization
    from finexl.toyworld.judge import load_judge

    judge = load_judge()
    settings = dict(
        preset="toy",
        samples=cfg.samples,
        n_bootstrap=cfg.n_bootstrap,
        n_null=cfg.n_null,
        seed=cfg.seed,
        cache_dir=cfg.cache_dir,
        device=cfg.device,
        sampler=cfg.sampler,
    )
    pipelines: dict[str, ExplainPipeline] = {}

    def pipeline(kind: str) -> ExplainPipeline:
        """The toy world's neutral prompts; DreamBooth models on their instance prompt, their concept directions
        from the class prompt (as ``finexl explain --direction-prompts``)."""
        key = "instance" if kind == "dreambooth" else "neutral"
        if key not in pipelines:
            prompts = dict(prompts=[INSTANCE_PROMPT], direction_prompts=[CLASS_PROMPT]) if key == "instance" else {}
            pipelines[key] = ExplainPipeline(ExplainConfig(**settings, **prompts))
        return pipelines[key]

    def target(truth: dict) -> Personalization:  # scale levels: one LoRA sampled at several scales
        return Personalization(lora=truth["path"], scale=float(truth.get("lora_scale", 1.0)))

    checked = {}  # every model is checked against the base before any image is made
    for truth in truths:
        pipe = pipeline(truth["kind"])
        pipe.check_prompts_fit()
        try:
            checked[truth["id"]] = pipe.check_personalization(target(truth))
        except OtherBaseError as err:
            raise SuiteError(
                f"suite model {truth['id']} ({truth['path']}) was trained on base {err.trained_on}, but the base "
                f"here ({pipe.base_dir}) is {pipe.base_fingerprint}: rebuild the suite with 'finexl bench build' on "
                "this base"
            ) from err

    records = []
    every = max(1, len(truths) // cfg.unpaired) if cfg.unpaired else 0
    for i, truth in enumerate(tqdm(truths, desc="bench", disable=not progress)):
        t0 = time.perf_counter()
        pipe, model = pipeline(truth["kind"]), target(truth)
        images = pipe.sample(model, checked[truth["id"]])
        embeddings = pipe.embed(images)
        directions = pipe.directions(images.prompts)
        reading = compare_readings(judge, images.base, images.tuned, images.null)
        judged = {**reading["categorical"], **reading["graded"]}
        record = {
            "id": truth["id"],
            "suite": truth["suite"],
            "kind": truth["kind"],
            "spec": truth["spec"],
            "level": truth["level"],
            "shifts": spec_shifts(truth["spec"]),
            "judge": {a: r["difference"] for a, r in judged.items()},
            # the judge's own null on the base's images with other seeds: an aspect "moved" clears it
            "judge_null": {a: r["null_threshold"] for a, r in judged.items()},
            "judge_moved": {a: r["moved"] for a, r in judged.items()},
            "methods": {},
        }
        for method in cfg.methods:
            res = pipe.decompose(embeddings, directions, method)
            keys = ("score", "interval", "direction", "changed", "toward", "concept", "group", "threshold")
            record["methods"][method] = {
                # a two-part method's joint-fit score too (finexl's: CHANGED needs that fit to pass its null test)
                "aspects": {
                    a.aspect: {k: getattr(a, k) for k in keys}
                    | ({"joint_score": a.joint_score} if a.joint_score is not None else {})
                    for a in res.aspects
                },
                "ranking": [a.aspect for a in res.aspects],
                "residual": res.residual["value"],
            }
        if every and truth["kind"] == "single" and i % every == 0:
            other = [s + UNPAIRED_SEED_OFFSET for s in images.seeds]
            unpaired = pipe.sample(model, checked[truth["id"]], seeds=other, null=False)
            aspect = record["shifts"][0][0]
            width = {}
            for name, tuned in (("paired", embeddings.tuned), ("unpaired", pipe.embed(unpaired).tuned)):
                res = pipe.decompose(replace(embeddings, tuned=tuned, null=None), directions, "finexl")
                a = next(a for a in res.aspects if a.aspect == aspect)
                width[name] = a.interval[1] - a.interval[0]
            record["interval_width"] = width
        record["seconds"] = round(time.perf_counter() - t0, 1)
        records.append(record)
        logger.info(
            "%s: %s first (%.0f s)", truth["id"], record["methods"][cfg.methods[0]]["ranking"][0], record["seconds"]
        )
    return records


def run_bench(
    suites_dir: str | Path, names: list[str], cfg: BenchConfig | None = None, progress: bool = False
) -> dict:
    """Score every method on the built suites ``names`` in ``suites_dir``.

    Returns ``{"suites", "config", "metrics", "comparison", "records"}``: the metrics of every method
    (:func:`finexl.bench.metrics.all_metrics`), finexl against the others by a paired bootstrap over models (when
    finexl is among several methods), and the per-model records they were computed from.
    """

    cfg = cfg or BenchConfig()
    records = run_models(load_truths(suites_dir, names), cfg, progress=progress)
    methods = list(cfg.methods)
    comparison = (
        compare_methods(records, methods, truth=cfg.truth) if "finexl" in methods and len(methods) > 1 else None
    )
    return {
        "suites": names,
        "config": {
            "methods": methods,
            "samples": cfg.samples,
            "bootstrap": cfg.n_bootstrap,
            "truth": cfg.truth,
            "sampler": asdict(cfg.sampler),
        },
        "metrics": all_metrics(records, methods, cfg.truth),
        "comparison": comparison,
        "records": records,
    }
