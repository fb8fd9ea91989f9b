"""The LoRA users' questions (issue 38) measured on the toy world, with the judge and its null as the truth.

    python scripts/measure_lora_questions.py sweep --suites runs/suites --json docs/results/sweep_scale_suite.json
    python scripts/measure_lora_questions.py stack --lora toy:red --lora toy:darker --json FILE
    python scripts/measure_lora_questions.py trigger --lora runs/suites/dreambooth/models/MODEL --json FILE

``sweep``: every LoRA of the built ``scale`` suite explained with ``--scales`` at its five levels; at each scale the
judge reads the same images against the base's and calls an aspect moved past its null. Per (LoRA, judged aspect):
finexl's onset (the smallest scale at which it is CHANGED) against the judge's (the smallest at which it moved);
the share within one step. ``stack``: a stack explained with ``--interaction``, and the judge's readings of the
stack and of each LoRA alone on the same images (its change under the stack against the sum of the changes alone).
``trigger``: a DreamBooth LoRA explained with ``--trigger auto`` on its class prompt, and the judge's readings of the
images with the trigger (its instance prompt) and without it (the class prompt): the leak against the judge's.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from finexl.bench.measure import compare_readings
from finexl.bench.metrics import judge_change
from finexl.bench.suites import CLASS_PROMPT, INSTANCE_PROMPT, suite_models
from finexl.explanation.pipeline import ExplainConfig, ExplainPipeline, Personalization
from finexl.toyworld.judge import load_judge
from finexl.utils import atomic_write_json


def judged(reading: dict) -> dict:
    """Per judged aspect: (change, toward, moved past the judge's null)."""
    out = {}
    for name, r in {**reading["categorical"], **reading["graded"]}.items():
        size, toward = judge_change(r["difference"])
        out[name] = {
            "change": round(size, 4),
            "toward": toward,
            "moved": bool(r["moved"]),
            "null": r["null_threshold"],
        }
    return out


def difference(reading: dict, name: str):
    part = reading["categorical"] if name in reading["categorical"] else reading["graded"]
    return part[name]["difference"]


def onset(scales: list[float], flags: list[bool]) -> float | None:
    return next((s for s, f in zip(scales, flags, strict=True) if f), None)


def cmd_sweep(args) -> dict:
    scales = [0.2, 0.4, 0.6, 0.8, 1.0]
    cfg = ExplainConfig(preset="toy", samples=args.samples, cache_dir=args.cache, scales=scales, report_pairs=0)
    pipe, judge = ExplainPipeline(cfg), load_judge()
    # the scale suite's protocol: one run per shift on fully shifted data at the usual learning rate, its LoRA
    # sampled at scales 0.2 ... 1.0. With --suite single: the single suite's L5 LoRAs, trained by that recipe
    kind, level = ("scale", "W5") if args.suite == "scale" else ("single", "L5")
    runs = sorted({m.id.rsplit("-", 1)[0] for m in suite_models(kind)})
    rows, agree, both_any = [], 0, 0
    for run in runs:
        folder = Path(args.suites) / kind / "models" / f"{run}-{level}"  # a scale level holds its run's one LoRA
        e = pipe(lora=str(folder))
        judge_flags: dict[str, list[bool]] = {}
        for s in scales:
            images = pipe.sample(Personalization(lora=str(folder), scale=s))
            for name, r in judged(compare_readings(judge, images.base, images.tuned, images.null)).items():
                judge_flags.setdefault(name, []).append(r["moved"])
        for aspect, flags in judge_flags.items():
            ours = e.sweep["aspects"][aspect]
            theirs = onset(scales, flags)
            step = scales[1] - scales[0]
            if ours["onset"] is None and theirs is None:
                close = True
            elif ours["onset"] is None or theirs is None:
                close = False
            else:
                close = abs(ours["onset"] - theirs) <= step + 1e-9
            any_onset = ours["onset"] is not None or theirs is not None
            agree += close
            both_any += any_onset
            rows.append(
                {"lora": run, "aspect": aspect, "finexl": ours["onset"], "judge": theirs, "within_one_step": close,
                 "steady": ours["steady"], "judge_moved": flags, "finexl_changed": ours["changed"]}
            )  # fmt: skip
        logging.info("%s done", run)
    with_onset = [r for r in rows if r["finexl"] is not None or r["judge"] is not None]
    return {
        "scales": scales,
        "samples": args.samples,
        "loras": [f"{kind}/{run}-{level}" for run in runs],
        "rows": rows,
        "share_within_one_step": agree / len(rows),
        "share_within_one_step_where_either_has_an_onset": (
            sum(r["within_one_step"] for r in with_onset) / len(with_onset) if with_onset else None
        ),
        "pairs": len(rows),
        "pairs_with_an_onset": both_any,
    }


def cmd_stack(args) -> dict:
    cfg = ExplainConfig(preset="toy", samples=args.samples, cache_dir=args.cache, interaction=True, report_pairs=0)
    pipe, judge = ExplainPipeline(cfg), load_judge()
    e = pipe(lora=args.lora, scale=args.scale or 1.0)
    target = Personalization.of(args.lora, scale=args.scale or 1.0)
    stack_images = pipe.sample(target)
    stack_reading = judged(compare_readings(judge, stack_images.base, stack_images.tuned, stack_images.null))
    alone = []
    for lora, s in target.loras:
        images = pipe.sample(Personalization(lora=lora, scale=s))
        alone.append(compare_readings(judge, images.base, images.tuned, images.null))
    reading = compare_readings(judge, stack_images.base, stack_images.tuned, stack_images.null)
    rows = {}
    for name in stack_reading:
        s_change, alone_changes = difference(reading, name), [difference(r, name) for r in alone]
        if isinstance(s_change, dict):  # the stack's most-increased value, read the same way alone
            top = max(s_change, key=s_change.get)
            s_value, a_values = s_change[top], [c[top] for c in alone_changes]
        else:
            top, s_value, a_values = "level", s_change, alone_changes
        ours = e.stack["aspects"].get(name)
        rows[name] = {
            "judge": {"value": top, "stack": round(s_value, 4), "alone": [round(v, 4) for v in a_values],
                      "sum": round(float(np.sum(a_values)), 4), "stack_moved": stack_reading[name]["moved"],
                      "null": round(stack_reading[name]["null"], 4)},
            "finexl": ours,
            "finexl_changed": name in e.changed,
        }  # fmt: skip
    moved = {n for n, r in stack_reading.items() if r["moved"]}
    changed = {n for n in e.changed if n in stack_reading}
    tp = len(moved & changed)
    return {
        "loras": [{"lora": lora, "scale": s} for lora, s in target.loras],
        "samples": args.samples,
        "rows": rows,
        "judge_moved": sorted(moved),
        "finexl_changed": sorted(changed),
        "precision": tp / len(changed) if changed else None,
        "recall": tp / len(moved) if moved else None,
    }


def cmd_trigger(args) -> dict:
    cfg = ExplainConfig(
        preset="toy", samples=args.samples, cache_dir=args.cache, trigger="auto", prompts=[CLASS_PROMPT],
        direction_prompts=[CLASS_PROMPT], report_pairs=0,
    )  # fmt: skip
    pipe, judge = ExplainPipeline(cfg), load_judge()
    e = pipe(lora=args.lora)
    with_trigger = Personalization(lora=args.lora, trigger=e.trigger["word"], instance=(CLASS_PROMPT, INSTANCE_PROMPT))
    images = pipe.sample(with_trigger)
    on = judged(compare_readings(judge, images.base, images.tuned, images.null))
    images = pipe.sample(Personalization(lora=args.lora))
    off = judged(compare_readings(judge, images.base, images.tuned, images.null))
    leak = e.trigger["leak"]

    def agreement(changed: set, moved: set) -> dict:
        tp = len(changed & moved)
        return {"finexl": sorted(changed), "judge": sorted(moved), "precision": tp / len(changed) if changed else None,
                "recall": tp / len(moved) if moved else None}  # fmt: skip

    judged_names = set(on)
    return {
        "lora": args.lora,
        "word": e.trigger["word"],
        "example": e.trigger["example"],
        "samples": args.samples,
        "with_trigger": agreement(
            {a for a in e.changed if a in judged_names}, {a for a, r in on.items() if r["moved"]}
        ),
        "leak": agreement(
            {a for a, r in leak.items() if r["changed"] and a in judged_names},
            {a for a, r in off.items() if r["moved"]},
        ),
        "judge_with": on,
        "judge_without": off,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sweep", "stack", "trigger"])
    ap.add_argument("--suites", default="runs/suites")
    ap.add_argument("--suite", choices=["scale", "single"], default="scale", help="sweep: whose LoRAs")
    ap.add_argument("--lora", action="append")
    ap.add_argument("--scale", type=float, action="append")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.what == "trigger":
        args.lora = args.lora[0]
    result = {"sweep": cmd_sweep, "stack": cmd_stack, "trigger": cmd_trigger}[args.what](args)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "judge_with", "judge_without")}, indent=1))
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
