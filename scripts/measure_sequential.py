"""``--samples auto`` and a fewer-step sampler against the fixed default, model by model, on built suites.

    python scripts/measure_sequential.py --suites runs/suites --names null,multi,quick [--fast unipc:10]
        [--threads 1] [--cache runs/cache] --json docs/results/sequential.json

For every model of the named suites (built with `finexl bench build`), through the explain pipeline:

1. ``reference``: 128 fixed pairs with the default sampler (the pipeline's own scheduler, 25 steps);
2. ``auto``: ``samples='auto'`` with the same sampler: its pairs are a prefix of the reference's (the cache serves
   them), so any difference in verdicts is the sequential rule's;
3. with ``--fast SCHEDULER:STEPS``: 128 fixed pairs with that sampler, and ``samples='auto'`` with it.

Per run it records the pairs used, every aspect's verdict, score and interval, and the order of the CHANGED aspects.
Then per suite and over all: mean pairs used, the share of (model, aspect) verdicts equal to the reference's, models
whose CHANGED order equals the reference's, mean |score difference|, and on null models the false-positive rate
(share of (model, aspect) verdicts CHANGED). Records are written after each model, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_record(pipe, truth: dict) -> dict:
    t0 = time.perf_counter()
    e = pipe(lora=truth["path"], scale=float(truth.get("lora_scale", 1.0)))
    return {
        "pairs": e.divergence["n_pairs"],
        "changed": e.changed,
        "aspects": {
            a.aspect: {"score": round(a.score, 5), "interval": [round(v, 5) for v in a.interval], "changed": a.changed}
            for a in e.aspects
        },  # fmt: skip
        "looks": e.sequential["looks"] if e.sequential else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def compare(runs: list[dict], ref: str, other: str) -> dict:
    """``other`` against ``ref`` over the models that have both."""
    pairs = [(r["runs"][ref], r["runs"][other]) for r in runs if ref in r["runs"] and other in r["runs"]]
    if not pairs:
        return {}
    same = [a["aspects"][k]["changed"] == b["aspects"][k]["changed"] for a, b in pairs for k in a["aspects"]]
    diffs = [abs(a["aspects"][k]["score"] - b["aspects"][k]["score"]) for a, b in pairs for k in a["aspects"]]
    return {
        "models": len(pairs),
        "verdicts_equal": float(np.mean(same)),
        "verdicts_differing": int(len(same) - sum(same)),
        "changed_order_equal": float(np.mean([a["changed"] == b["changed"] for a, b in pairs])),
        "mean_abs_score_difference": float(np.mean(diffs)),
        "mean_pairs": float(np.mean([b["pairs"] for _, b in pairs])),
        "pairs_share": float(np.mean([b["pairs"] for _, b in pairs]) / np.mean([a["pairs"] for a, _ in pairs])),
    }


def false_positive_rate(runs: list[dict], name: str) -> float | None:
    flags = [a["changed"] for r in runs if r["kind"] == "null" and name in r["runs"]
             for a in r["runs"][name]["aspects"].values()]  # fmt: skip
    return float(np.mean(flags)) if flags else None


def summarize(records: list[dict], names: list[str]) -> dict:
    out = {}
    groups = {suite: [r for r in records if r["suite"] == suite] for suite in names}
    groups["all"] = records
    for group, runs in groups.items():
        block = {"models": len(runs)}
        names_run = sorted({k for r in runs for k in r["runs"]} - {"reference"})
        for other in names_run:
            got = compare(runs, "reference", other)
            if got:
                block[f"{other} vs reference"] = got
        if any(r["kind"] == "null" for r in runs):
            block["null_fpr"] = {k: false_positive_rate(runs, k) for k in ["reference", *names_run]}
        out[group] = block
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", default="suites", help="folder of built suites")
    parser.add_argument("--names", default="null,multi,single", help="comma-separated suites")
    parser.add_argument("--fast", help="SCHEDULER:STEPS of a fewer-step sampler to compare, e.g. unipc:10")
    parser.add_argument("--fast-on", default="quick,single", help="suites the fewer-step sampler runs on")
    parser.add_argument("--errors", default="0.01", help="comma-separated error rates of samples='auto' to run")
    parser.add_argument("--rounds", default="32", help="comma-separated round sizes of samples='auto' to run")
    parser.add_argument("--verdicts", default="each", help="comma-separated auto_verdicts rules to run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", help="image cache folder (default finexl's)")
    parser.add_argument("--json", required=True, help="records and summary (resumed if it exists)")
    parser.add_argument("--reverse", action="store_true", help="models in reverse order (a second process)")
    parser.add_argument("--merge", nargs="*", default=[], help="record files of other processes to merge first")
    args = parser.parse_args()

    import torch

    from finexl.bench.runner import load_truths
    from finexl.explanation.pipeline import ExplainConfig, ExplainPipeline
    from finexl.sampling import SamplerConfig

    torch.set_num_threads(args.threads)
    names = [n for n in args.names.split(",") if n]
    samplers = {"reference": SamplerConfig()}
    if args.fast:
        scheduler, steps = args.fast.split(":")
        samplers["fast"] = SamplerConfig(scheduler=scheduler, num_inference_steps=int(steps))
    pipes = {}
    for name, sampler in samplers.items():
        common = dict(preset="toy", report_pairs=0, cache_dir=args.cache, sampler=sampler)
        pipes[name] = ExplainPipeline(ExplainConfig(**common, samples=128))
        for error in map(float, args.errors.split(",")):
            for size in map(int, args.rounds.split(",")):
                for rule in args.verdicts.split(","):
                    auto = f"{'auto' if name == 'reference' else 'fast_auto'} e={error:g} r={size}"
                    auto += "" if rule == "each" else f" {rule}"  # "each" was the only rule of the first records
                    pipes[auto] = ExplainPipeline(ExplainConfig(**common, samples="auto", auto_error=error,
                                                                auto_round=size, auto_verdicts=rule))  # fmt: skip
    path = Path(args.json)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    records = {(r["suite"], r["id"]): r for r in saved.get("records", [])}  # quick's ids recur in single
    for other in args.merge:  # a second process's records, model by model, where this file lacks them
        for r in json.loads(Path(other).read_text()).get("records", []):
            mine = records.setdefault((r["suite"], r["id"]), r)
            for name, run in r["runs"].items():
                mine["runs"].setdefault(name, run)
    truths = [t for t in load_truths(args.suites, names) if t["kind"] != "dreambooth"]
    if args.reverse:
        truths = truths[::-1]
    for i, truth in enumerate(truths):
        fresh = {"id": truth["id"], "suite": truth["suite"], "kind": truth["kind"], "spec": truth["spec"], "runs": {}}
        record = records.setdefault((truth["suite"], truth["id"]), fresh)
        for name, pipe in pipes.items():
            if name.startswith("fast") and truth["suite"] not in args.fast_on.split(","):
                continue
            if name not in record["runs"]:
                record["runs"][name] = run_record(pipe, truth)
        runs = record["runs"]
        print(f"[{i + 1}/{len(truths)}] {truth['id']}: reference {runs['reference']['changed']}; "
              + "; ".join(f"{k} {v['pairs']} pairs {v['changed']}" for k, v in runs.items() if k != "reference"),
              flush=True)  # fmt: skip
        result = {"suites": names, "samplers": {k: vars(v) for k, v in samplers.items()}, "threads": args.threads,
                  "summary": summarize(list(records.values()), names), "records": list(records.values())}  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(path)
    print(json.dumps(summarize(list(records.values()), names), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
