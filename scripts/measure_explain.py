"""Measure finexl explain on toy LoRAs with known ground truth (single-aspect levels and nulls).

For every model of the built suites: sample base and personalized on the same neutral prompts and seeds (cached),
read both with the judge (what really changed), embed with the toy CLIP and decompose with every method.
Prints and writes: top-1 rate of the true aspect, Spearman(score, level) per aspect, direction accuracy, the
null false-positive rate, and the paired/unpaired interval-width ratio.

    finexl bench build single --out runs/suites --threads 1; finexl bench build null --out runs/suites --threads 1
    python scripts/measure_explain.py --suites runs/suites --json docs/explain_measure.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from finexl.explain.concepts import load_concept_bank, text_directions
from finexl.explain.decompose import ESTIMATORS
from finexl.explain.embed import load_embedder
from finexl.explain.explainer import NULL_SEED_OFFSET, decompose_divergence, default_prompts, requests
from finexl.explain.paired import ImageCache, cached_samples, lora_fingerprint
from finexl.loading import fingerprint_folder, load_lora, load_pipeline, resolve_lora_file
from finexl.sampling import SamplerConfig
from finexl.toyworld.judge import load_judge
from finexl.toyworld.measure import compare_readings
from finexl.utils import atomic_write_json, data_dir

UNPAIRED_SEED_OFFSET = 2_000_000


def spec_aspect(spec: str) -> tuple[str, str]:
    aspect, rest = spec.split("=", 1)
    return aspect, rest.split("@")[0]


def measured_change(reading: dict, aspect: str, target: str) -> float:
    """The judge's change on the shifted aspect: frequency of the target value, or the mean level."""
    if aspect in reading["categorical"]:
        return reading["categorical"][aspect]["difference"][target]
    return reading["graded"][aspect]["difference"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", default="runs/suites")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--methods", default=",".join(ESTIMATORS))
    ap.add_argument("--unpaired", type=int, default=8, help="models on which to compare paired/unpaired intervals")
    ap.add_argument("--json")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    suites = Path(args.suites)
    models = sorted((suites / "single" / "models").glob("*/truth.json")) + sorted(
        (suites / "null" / "models").glob("*/truth.json")
    )
    truths = [json.loads(p.read_text()) | {"path": str(p.parent)} for p in models]
    methods = args.methods.split(",")
    base_dir = data_dir() / "toy_sd"
    base_fp = fingerprint_folder(base_dir)
    sampler = SamplerConfig()
    cache = ImageCache(args.cache)
    embedder, judge = load_embedder(), load_judge()
    bank = load_concept_bank("toy")
    prompts, seeds = requests(default_prompts(), args.samples, 0)
    directions = text_directions(embedder, bank, prompts, cache.root)
    base_pipe = {}

    def pipe():
        if "p" not in base_pipe:
            base_pipe["p"] = load_pipeline(base_dir)
        return base_pipe["p"]

    base_images = cached_samples(pipe, base_fp, prompts, seeds, sampler, cache, "base")
    null_images = cached_samples(pipe, base_fp, prompts, [s + NULL_SEED_OFFSET for s in seeds], sampler, cache)
    base_emb, null_emb = embedder.embed_images(base_images), embedder.embed_images(null_images)

    rows = []
    for i, truth in enumerate(truths):
        t0 = time.perf_counter()
        lora = resolve_lora_file(truth["path"])
        fp = lora_fingerprint(base_fp, fingerprint_folder(lora), 1.0)

        def tuned_pipe(lora=lora):
            p = load_pipeline(base_dir)
            load_lora(p, lora)
            return p

        tuned_images = cached_samples(tuned_pipe, fp, prompts, seeds, sampler, cache, truth["id"])
        tuned_emb = embedder.embed_images(tuned_images)
        reading = compare_readings(judge, base_images, tuned_images)
        row = {"id": truth["id"], "kind": truth["kind"], "level": truth["level"], "spec": truth["spec"], "methods": {}}
        row["judge"] = {
            **{a: round(r["total_variation"], 3) for a, r in reading["categorical"].items()},
            **{a: round(r["difference"], 3) for a, r in reading["graded"].items()},
        }  # per aspect: total variation (categorical) or change of the mean level (graded)
        if truth["spec"]:
            aspect, target = spec_aspect(truth["spec"])
            row["aspect"], row["target"] = aspect, target
            row["measured"] = measured_change(reading, aspect, target)
        for method in methods:
            res = decompose_divergence(base_emb, tuned_emb, directions, method, null_base=null_emb, seed=0)
            row["methods"][method] = {
                "aspects": {
                    a["aspect"]: {k: a[k] for k in ("score", "interval", "direction", "changed", "toward")}
                    for a in res["aspects"]
                },  # fmt: skip
                "ranking": [a["aspect"] for a in res["aspects"]],
                "residual": res["residual"]["value"],
            }
        if truth["spec"] and i % max(1, len(truths) // max(args.unpaired, 1)) == 0 and args.unpaired:
            other = [s + UNPAIRED_SEED_OFFSET for s in seeds]
            unpaired = embedder.embed_images(cached_samples(tuned_pipe, fp, prompts, other, sampler, cache))
            res_p = decompose_divergence(base_emb, tuned_emb, directions, "finexl", seed=0)
            res_u = decompose_divergence(base_emb, unpaired, directions, "finexl", seed=0)
            width = {}
            for name, res in (("paired", res_p), ("unpaired", res_u)):
                a = next(a for a in res["aspects"] if a["aspect"] == row["aspect"])
                width[name] = a["interval"][1] - a["interval"][0]
            row["interval_width"] = width
        rows.append(row)
        top = row["methods"][methods[0]]["ranking"][0]
        print(f"{truth['id']:<24} measured {row.get('measured', float('nan')):+.3f}  {methods[0]} top {top:<11}"
              f"  {time.perf_counter() - t0:.0f}s", flush=True)  # fmt: skip

    summary = summarize(rows, methods)
    print(json.dumps(summary, indent=1))
    if args.json:
        atomic_write_json(args.json, {"summary": summary, "models": rows, "samples": args.samples})


def summarize(rows: list[dict], methods: list[str]) -> dict:
    single = [r for r in rows if r["kind"] == "single"]
    nulls = [r for r in rows if r["kind"] == "null"]
    out = {}
    for m in methods:
        top1 = [r["methods"][m]["ranking"][0] == r["aspect"] for r in single]
        spearman, spearman_measured = {}, {}
        for aspect in sorted({r["aspect"] for r in single}):
            group = sorted((r for r in single if r["aspect"] == aspect), key=lambda r: r["level"])
            scores = [r["methods"][m]["aspects"][aspect]["score"] for r in group]
            spearman[aspect] = float(spearmanr([r["level"] for r in group], scores)[0]) if len(group) > 2 else None
            spearman_measured[aspect] = (
                float(spearmanr([abs(r["measured"]) for r in group], scores)[0]) if len(group) > 2 else None
            )
        direction = [direction_correct(r, r["methods"][m]["aspects"][r["aspect"]]) for r in single]
        checks = [a["changed"] for r in nulls for a in r["methods"][m]["aspects"].values()]
        detected = [r["methods"][m]["aspects"][r["aspect"]]["changed"] for r in single]
        other_fp = [a["changed"] for r in single for name, a in r["methods"][m]["aspects"].items()
                    if name != r["aspect"]]  # fmt: skip
        by_level = {
            level: float(
                np.mean([r["methods"][m]["ranking"][0] == r["aspect"] for r in single if r["level"] == level])
            )
            for level in sorted({r["level"] for r in single})
        }
        by_aspect = {
            aspect: float(np.mean([r["methods"][m]["ranking"][0] == aspect for r in single if r["aspect"] == aspect]))
            for aspect in sorted({r["aspect"] for r in single})
        }
        out[m] = {
            "top1": float(np.mean(top1)) if top1 else None,
            "top1_by_aspect": by_aspect,
            "top1_by_level": by_level,
            "spearman_level": spearman,
            "spearman_measured": spearman_measured,
            "direction_accuracy": float(np.mean(direction)) if direction else None,
            "true_aspect_detected": float(np.mean(detected)) if detected else None,
            "null_false_positive_rate": float(np.mean(checks)) if checks else None,
            "null_models_all_clear": float(
                np.mean([not any(a["changed"] for a in r["methods"][m]["aspects"].values()) for r in nulls])
            )
            if nulls
            else None,  # fmt: skip
            "other_aspect_false_positive_rate": float(np.mean(other_fp)) if other_fp else None,
        }
    widths = [r["interval_width"] for r in rows if "interval_width" in r]
    if widths:
        out["paired_over_unpaired_interval_width"] = float(
            np.mean([w["paired"] for w in widths]) / np.mean([w["unpaired"] for w in widths])
        )
    return out


def direction_correct(row: dict, result: dict) -> bool:
    """Graded: the reported direction matches more/less. Categorical: an increase toward a phrase naming the
    target value (e.g. "scarlet" for red), not "less blue"."""
    from finexl.toyworld.aspects import CATEGORICAL_BY_NAME

    if row["target"] in ("more", "less"):
        return result["direction"] == ("increase" if row["target"] == "more" else "decrease")
    words = CATEGORICAL_BY_NAME[row["aspect"]].words[row["target"]]
    return result["direction"] == "increase" and any(w.lower() in result["toward"].lower() for w in words)


if __name__ == "__main__":
    main()
