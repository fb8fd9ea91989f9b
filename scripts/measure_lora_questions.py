"""The LoRA users' questions (issue 38) measured on the toy world, with the judge and its null as the truth.

    python scripts/measure_lora_questions.py sweep --suites runs/suites --json docs/results/sweep_scale_suite.json
    python scripts/measure_lora_questions.py stack --lora toy:red --lora toy:darker --json FILE
    python scripts/measure_lora_questions.py train --spec brightness=more@1 --out runs/extra/brightness-more
    python scripts/measure_lora_questions.py trigger --suites runs/suites --json FILE   # or --lora MODEL ...

``sweep``: every LoRA of the built ``scale`` suite explained with ``--scales`` at its five levels; at each scale the
judge reads the same images against the base's and calls an aspect moved past its null. Per (LoRA, judged aspect):
finexl's onset (the smallest scale at which it is CHANGED) against the judge's (the smallest at which it moved);
the share within one step. ``stack``: a stack explained with ``--interaction``, and the judge's readings of the
stack and of each LoRA alone on the same images: its change under the stack against the sum of the changes alone,
per pair, with a bootstrap interval and the same verdict rule. ``trigger``: every LoRA of the built ``dreambooth``
suite (or ``--lora``) explained on explain's defaults (a DreamBooth model: its class prompt, sampled as its instance
prompt, and the leak on the class prompt), and the judge's readings of the same images with the trigger and
without it: CHANGED against moved past the judge's null, per subject and summed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from finexl.bench.measure import compare_readings
from finexl.bench.metrics import judge_change
from finexl.bench.suites import suite_models
from finexl.explanation.pipeline import ExplainConfig, ExplainPipeline, Personalization
from finexl.stats import bootstrap_indices, percentile_interval
from finexl.toyworld.judge import load_judge, read_images
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


def per_pair(reading, name: str, value: str) -> np.ndarray:
    """The judge's reading of each image: 1 where it reads ``value`` (a categorical aspect), else the level."""
    if name in reading.categorical:
        return (np.array(reading.categorical[name]) == value).astype(float)
    return np.asarray(reading.graded[name], dtype=float)


def judge_interaction(base, stack, alone: list, name: str, value: str, sign: float, seed: int = 0) -> dict:
    """The judge's stack minus the sum of the LoRAs alone on one aspect's value, along the stack's way (``sign``),
    per pair (the same prompt and seed for every image set), with a 90 % bootstrap interval over the pairs (the
    level of finexl's intervals) and the verdict by the rule finexl's stack table uses."""
    b = per_pair(base, name, value)
    x = sign * ((per_pair(stack, name, value) - b) - sum(per_pair(r, name, value) - b for r in alone))
    rng = np.random.default_rng(seed)
    means = [x[i].mean() for i in bootstrap_indices(rng, len(x), 2000)]
    low, high = (float(v) for v in percentile_interval(np.array(means), 0.9))
    verdict = "strengthened" if low > 0 else "weakened" if high < 0 else "additive"
    return {"interaction": round(float(x.mean()), 4), "interval": [round(low, 4), round(high, 4)], "verdict": verdict}


def cmd_stack(args) -> dict:
    cfg = ExplainConfig(preset="toy", samples=args.samples, cache_dir=args.cache, interaction=True, report_pairs=0)
    pipe, judge = ExplainPipeline(cfg), load_judge()
    e = pipe(lora=args.lora, scale=args.scale or 1.0)
    target = Personalization.of(args.lora, scale=args.scale or 1.0)
    stack_images = pipe.sample(target)
    stack_reading = judged(compare_readings(judge, stack_images.base, stack_images.tuned, stack_images.null))
    alone, alone_read = [], []
    for lora, s in target.loras:
        images = pipe.sample(Personalization(lora=lora, scale=s))
        alone.append(compare_readings(judge, images.base, images.tuned, images.null))
        alone_read.append(read_images(judge, images.tuned))
    reading = compare_readings(judge, stack_images.base, stack_images.tuned, stack_images.null)
    base_read, stack_read = read_images(judge, stack_images.base), read_images(judge, stack_images.tuned)
    rows = {}
    for name in stack_reading:
        s_change, alone_changes = difference(reading, name), [difference(r, name) for r in alone]
        if isinstance(s_change, dict):  # the stack's most-increased value, read the same way alone
            top = max(s_change, key=s_change.get)
            s_value, a_values = s_change[top], [c[top] for c in alone_changes]
        else:
            top, s_value, a_values = "level", s_change, alone_changes
        ours = e.stack["aspects"].get(name)
        sign = 1.0 if s_value >= 0 else -1.0
        theirs = judge_interaction(base_read, stack_read, alone_read, name, top, sign)
        rows[name] = {
            "judge": {"value": top, "stack": round(s_value, 4), "alone": [round(v, 4) for v in a_values],
                      "sum": round(float(np.sum(a_values)), 4), "stack_moved": stack_reading[name]["moved"],
                      "null": round(stack_reading[name]["null"], 4), **theirs},
            "finexl": ours,
            "finexl_changed": name in e.changed,
        }  # fmt: skip
    moved = {n for n, r in stack_reading.items() if r["moved"]}
    changed = {n for n in e.changed if n in stack_reading}
    tp = len(moved & changed)
    # the interaction verdicts side by side where the judge's interval excludes 0 or finexl's does (finexl's new
    # is its strengthened where no LoRA alone is CHANGED; none: it calls nothing CHANGED)
    both = [(n, r["judge"]["verdict"], r["finexl"]["verdict"]) for n, r in rows.items() if r["finexl"]]
    strong = {"new": "strengthened"}
    return {
        "loras": [{"lora": lora, "scale": s} for lora, s in target.loras],
        "samples": args.samples,
        "rows": rows,
        "judge_moved": sorted(moved),
        "finexl_changed": sorted(changed),
        "precision": tp / len(changed) if changed else None,
        "recall": tp / len(moved) if moved else None,
        "interaction_verdicts": {n: {"judge": j, "finexl": f} for n, j, f in both},
        "interaction_agreement": sum(j == strong.get(f, f) for _, j, f in both if f != "none")
        / max(1, sum(f != "none" for _, _, f in both)),
        "judge_non_additive": sorted(n for n, j, _ in both if j != "additive"),
    }


def cmd_trigger(args) -> dict:
    """Each DreamBooth LoRA explained on explain's defaults (its class prompt, sampled as its instance prompt; the
    leak on the class prompt); the judge reads the same images."""
    cfg = ExplainConfig(preset="toy", samples=args.samples, cache_dir=args.cache, report_pairs=0)
    pipe, judge = ExplainPipeline(cfg), load_judge()
    loras = args.lora or [str(Path(args.suites) / "dreambooth" / "models" / m.id) for m in suite_models("dreambooth")]
    subjects, totals = [], {"with_trigger": [0, 0, 0], "leak": [0, 0, 0]}  # true positives, CHANGED, moved

    def agreement(changed: set, moved: set, key: str) -> dict:
        tp = len(changed & moved)
        for i, n in enumerate((tp, len(changed), len(moved))):
            totals[key][i] += n
        return {"finexl": sorted(changed), "judge": sorted(moved), "precision": tp / len(changed) if changed else None,
                "recall": tp / len(moved) if moved else None}  # fmt: skip

    for lora in loras:
        e = pipe(lora=lora)  # the defaults: no --trigger, no --prompts
        example = e.trigger["example"]
        cls, instance = example["base"], example["with"]
        assert e.settings["prompts"] == [cls], "a DreamBooth model is explained on its class prompt by default"
        same = ExplainPipeline(replace(cfg, prompts=[cls]))  # the explanation's images, from the cache
        target = Personalization(lora=lora, trigger=e.trigger["word"], instance=(cls, instance))
        images = same.sample(target)
        on = judged(compare_readings(judge, images.base, images.tuned, images.null))
        images = same.sample(Personalization(lora=lora))
        off = judged(compare_readings(judge, images.base, images.tuned, images.null))
        leak, names = e.trigger["leak"], set(on)
        subjects.append({
            "lora": lora,
            "word": e.trigger["word"],
            "source": e.trigger["source"],
            "example": example,
            "with_trigger": agreement({a for a in e.changed if a in names}, {a for a, r in on.items() if r["moved"]},
                                      "with_trigger"),
            "leak": agreement({a for a, r in leak.items() if r["changed"] and a in names},
                              {a for a, r in off.items() if r["moved"]}, "leak"),
            "judge_with": on,
            "judge_without": off,
        })  # fmt: skip
        logging.info("%s done", Path(lora).name)
    return {
        "samples": args.samples,
        "subjects": subjects,
        **{
            key: {
                "precision": tp / c if c else None,
                "recall": tp / m if m else None,
                "finexl_changed": c,
                "judge_moved": m,
                "both": tp,
            }
            for key, (tp, c, m) in totals.items()
        },  # fmt: skip
    }


def cmd_train(args) -> dict:
    """One LoRA by the suites' recipe (a ``single`` L5 model: the spec at full strength, the build's defaults), e.g.
    ``--spec brightness=more@1 --out runs/extra/brightness-more``: the partner of the opposite-pair stack."""
    from finexl.bench.suites import BuildConfig, SuiteModel, build_model
    from finexl.presets import get_preset

    model_id = f"{args.spec.split('@')[0].replace('=', '-')}-L5"
    seed = int.from_bytes(hashlib.sha256(model_id.encode()).digest()[:4], "little") % 1_000_000
    model = SuiteModel(model_id, "single", args.spec, 5, seed)
    return build_model(model, Path(args.out), BuildConfig(), get_preset("toy").base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sweep", "stack", "trigger", "train"])
    ap.add_argument("--spec", help="train: the shift, e.g. brightness=more@1")
    ap.add_argument("--out", help="train: the LoRA's folder")
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
    result = {"sweep": cmd_sweep, "stack": cmd_stack, "trigger": cmd_trigger, "train": cmd_train}[args.what](args)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "subjects")}, indent=1))
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
