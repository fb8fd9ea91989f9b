"""Measure `finexl explain` on toy LoRAs with known ground truth (issue: explain a personalization).

Builds nothing: run `finexl bench build single` (or `steps` / `scale`, the levels by training steps or by LoRA
scale: `--single steps|scale`) and `finexl bench build null` first (about an hour on one core; `steps` and `scale`
about 15 minutes each: one run per shift).
Then, on the same cached images and embeddings as `finexl bench run`, prints per method: the share of single-aspect
LoRAs whose shifted aspect is ranked first (overall, per level, per aspect), Spearman(score, level) per aspect, the
direction accuracy, the share of null-LoRA aspect checks reported as changed, and the ratio of interval widths with
paired versus unpaired noise at the same number of samples.

    python scripts/measure_explain.py --suites runs/suites --json docs/results/explain_measure.json
    python scripts/measure_explain.py --suites runs/suites --single steps \
        --json docs/results/explain_measure_steps.json
    python scripts/measure_explain.py --suites runs/suites --single scale \
        --json docs/results/explain_measure_scale.json
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from finexl.bench.metrics import all_metrics, judge_shift
from finexl.bench.runner import BenchConfig, load_truths, run_models
from finexl.bench.suites import single_aspect_suites
from finexl.utils import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", default="runs/suites")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument(
        "--single",
        default="single",
        choices=single_aspect_suites(),
        help="the single-aspect suite: levels by data strength (single), training steps (steps) or LoRA scale (scale)",
    )
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--methods", default=",".join(BenchConfig.methods))
    ap.add_argument("--unpaired", type=int, default=9, help="single-aspect models with an unpaired comparison")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    cfg = BenchConfig(methods=tuple(methods), samples=args.samples, unpaired=args.unpaired, cache_dir=args.cache)
    records = run_models(load_truths(args.suites, [args.single, "null"]), cfg)
    metrics = all_metrics(records, methods)
    single = [r for r in records if r["kind"] == "single"]
    summary = {}
    for m in methods:
        first = [r["methods"][m]["ranking"][0] == r["shifts"][0][0] for r in single]
        summary[m] = {
            "top1": float(np.mean(first)),
            "top1_by_level": {
                lv: float(np.mean([f for f, r in zip(first, single, strict=True) if r["level"] == lv]))
                for lv in sorted({r["level"] for r in single})
            },  # fmt: skip
            "top1_by_aspect": {
                a: float(np.mean([f for f, r in zip(first, single, strict=True) if r["shifts"][0][0] == a]))
                for a in sorted({r["shifts"][0][0] for r in single})
            },  # fmt: skip
            "top1_judge": metrics[m].get("top1_judge"),
            "spearman_level": metrics[m]["spearman"],
            "spearman_judge": metrics[m].get("spearman_judge"),
            "direction": metrics[m]["direction"],
            "null_fpr": metrics[m].get("null_fpr"),
            "level_mae": metrics[m]["level_mae"],
        }
    summary["top1_of_judge"] = metrics.get("_top1_of_judge")
    summary["paired_over_unpaired_interval_width"] = metrics.get("_paired_over_unpaired_interval_width")
    # the judge's reading of each model's move toward its target (what spearman_judge ranks the scores against)
    summary["judge_shift"] = {r["id"]: judge_shift(r) for r in single}
    print(json.dumps(summary, indent=1))
    if args.json:
        atomic_write_json(args.json, {"summary": summary, "metrics": metrics, "records": records,
                                      "samples": args.samples, "suites": [args.single, "null"]})  # fmt: skip


if __name__ == "__main__":
    main()
