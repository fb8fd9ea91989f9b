"""Run every method on every model of built suites, on the same images and embeddings.

For each model: sample base and personalized on the same prompts and seeds (cached; DreamBooth models on their
instance prompt, the others on the toy world's neutral prompts), read both with the judge (what really changed),
embed with the toy CLIP once (DreamBooth's concept directions from the class prompt, the instance prompt without its
identifier), and score with every method through
:func:`finexl.explain.explainer.decompose_divergence`. The records feed :mod:`finexl.bench.metrics`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

UNPAIRED_SEED_OFFSET = 2_000_000


@dataclass
class BenchConfig:
    methods: tuple[str, ...] = ("finexl", "paper", "nnls", "whitened-nnls", "sparse", "gsclip", "visdiff", "splice")
    samples: int = 128
    n_bootstrap: int = 200
    n_null: int = 200
    seed: int = 0
    unpaired: int = 0  # models on which to also measure intervals with unpaired noise
    cache_dir: str | None = None


class SuiteError(ValueError):
    """A suite folder that is missing models or files."""


def load_truths(suites_dir: str | Path, names: list[str]) -> list[dict]:
    """The truth record of every model of the named suites; a listed model without its files is an error."""
    from finexl.bench.suites import suite_models

    out = []
    for name in names:
        folder = Path(suites_dir) / name
        if not (folder / "models").is_dir():
            raise SuiteError(f"suite {name!r} is not built in {folder} (run: finexl bench build {name})")
        for model in suite_models(name):
            path = folder / "models" / model.id
            if not (path / "truth.json").is_file() or not (path / "pytorch_lora_weights.safetensors").is_file():
                raise SuiteError(f"suite {name!r}: model {model.id} is missing from {folder / 'models'}")
            out.append(json.loads((path / "truth.json").read_text()) | {"path": str(path), "suite": name})
    return out


def spec_shifts(spec: str | None) -> list[tuple[str, str, float]]:
    if not spec:
        return []
    from finexl.toyworld.personalization import parse_spec

    return [(s.aspect, s.target, s.strength) for s in parse_spec(spec)]


def run_models(truths: list[dict], cfg: BenchConfig, progress: bool = True) -> list[dict]:
    from finexl.bench.suites import CLASS_PROMPT, INSTANCE_PROMPT
    from finexl.explain.concepts import load_concept_bank, text_directions
    from finexl.explain.embed import load_embedder
    from finexl.explain.explainer import NULL_SEED_OFFSET, decompose_divergence, default_prompts, requests
    from finexl.explain.paired import ImageCache, cached_samples, default_cache_dir, lora_fingerprint
    from finexl.loading import fingerprint_folder, load_lora, load_pipeline, recorded_base, resolve_lora_file
    from finexl.sampling import SamplerConfig
    from finexl.toyworld.judge import load_judge
    from finexl.toyworld.measure import compare_readings
    from finexl.utils import data_dir

    base_dir = data_dir() / "toy_sd"
    base_fp = fingerprint_folder(base_dir)
    sampler = SamplerConfig()
    cache = ImageCache(cfg.cache_dir or default_cache_dir())
    embedder, judge, bank = load_embedder(), load_judge(), load_concept_bank("toy")
    pipes: dict[str, object] = {}

    def base_pipe():
        if "base" not in pipes:
            pipes["base"] = load_pipeline(base_dir)
        return pipes["base"]

    worlds = {}  # prompt set -> (prompts, seeds, base embeddings, null embeddings, directions, base images)

    def world(kind: str):
        key = "instance" if kind == "dreambooth" else "neutral"
        if key not in worlds:
            prompts = [INSTANCE_PROMPT] if key == "instance" else default_prompts()
            ps, seeds = requests(prompts, cfg.samples, cfg.seed)
            base_images = cached_samples(base_pipe, base_fp, ps, seeds, sampler, cache, "base")
            null_seeds = [s + NULL_SEED_OFFSET for s in seeds]
            null_images = cached_samples(base_pipe, base_fp, ps, null_seeds, sampler, cache, "base (null)")
            direction_prompts = [CLASS_PROMPT] if key == "instance" else ps  # as `finexl explain --direction-prompts`
            worlds[key] = (ps, seeds, embedder.embed_images(base_images), embedder.embed_images(null_images),
                           text_directions(embedder, bank, direction_prompts, cache.root), base_images)  # fmt: skip
        return worlds[key]

    records = []
    every = max(1, len(truths) // cfg.unpaired) if cfg.unpaired else 0
    for i, truth in enumerate(tqdm(truths, desc="bench", disable=not progress)):
        t0 = time.perf_counter()
        ps, seeds, base_emb, null_emb, directions, base_images = world(truth["kind"])
        lora = resolve_lora_file(truth["path"])
        trained_on = recorded_base(lora)
        if trained_on is not None and trained_on != base_fp:
            raise ValueError(
                f"suite model {truth['id']} ({truth['path']}) was trained on base {trained_on}, but the base here "
                f"({base_dir}) is {base_fp}: rebuild the suite with 'finexl bench build' on this base"
            )
        scale = float(truth.get("lora_scale", 1.0))  # scale levels: one LoRA sampled at several scales
        fp = lora_fingerprint(base_fp, fingerprint_folder(lora), scale)

        def tuned_pipe(lora=lora, scale=scale):
            pipe = load_pipeline(base_dir)
            load_lora(pipe, lora, scale=scale)
            return pipe

        tuned_images = cached_samples(tuned_pipe, fp, ps, seeds, sampler, cache, truth["id"])
        tuned_emb = embedder.embed_images(tuned_images)
        reading = compare_readings(judge, base_images, tuned_images)
        record = {
            "id": truth["id"], "suite": truth["suite"], "kind": truth["kind"], "spec": truth["spec"],
            "level": truth["level"], "shifts": spec_shifts(truth["spec"]),
            "judge": {**{a: r["difference"] for a, r in reading["categorical"].items()},
                      **{a: r["difference"] for a, r in reading["graded"].items()}},
            "methods": {},
        }  # fmt: skip
        for method in cfg.methods:
            res = decompose_divergence(base_emb, tuned_emb, directions, method, null_base=null_emb,
                                       n_bootstrap=cfg.n_bootstrap, n_null=cfg.n_null, seed=cfg.seed)  # fmt: skip
            keys = ("score", "interval", "direction", "changed", "toward", "concept", "group", "threshold")
            record["methods"][method] = {
                # a two-part method's joint-fit score too (finexl's: CHANGED needs that fit to pass its null test)
                "aspects": {a["aspect"]: {k: a[k] for k in keys}
                            | ({"joint_score": a["joint_score"]} if a.get("joint_score") is not None else {})
                            for a in res["aspects"]},
                "ranking": [a["aspect"] for a in res["aspects"]],
                "residual": res["residual"]["value"],
            }  # fmt: skip
        if every and truth["kind"] == "single" and i % every == 0:
            other = [s + UNPAIRED_SEED_OFFSET for s in seeds]
            unpaired = embedder.embed_images(cached_samples(tuned_pipe, fp, ps, other, sampler, cache))
            aspect = record["shifts"][0][0]
            width = {}
            for name, emb in (("paired", tuned_emb), ("unpaired", unpaired)):
                res = decompose_divergence(base_emb, emb, directions, "finexl", n_bootstrap=cfg.n_bootstrap,
                                           seed=cfg.seed)  # fmt: skip
                a = next(a for a in res["aspects"] if a["aspect"] == aspect)
                width[name] = a["interval"][1] - a["interval"][0]
            record["interval_width"] = width
        record["seconds"] = round(time.perf_counter() - t0, 1)
        records.append(record)
        logger.info("%s: %s first (%.0f s)", truth["id"], record["methods"][cfg.methods[0]]["ranking"][0],
                    record["seconds"])  # fmt: skip
    return records
