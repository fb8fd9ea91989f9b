"""The labeling study end to end on toy models, with simulated raters (run in CI).

1. explain three toy models (the shipped red and darker LoRAs, and the red LoRA at scale 0: no change at all);
2. ``finexl label make`` their folders into a task;
3. two simulated raters answer it, written in the export format of ``label.html``: ``judge``, the toy world's
   judge with its null (an aspect changed when the judge's change between the base's and the model's images
   clears what it reads between the base's images on two sets of seeds), and ``judge-noisy``, the same answers
   with seeded noise (a level off by one on a quarter of the changes, a tenth of the verdicts flipped). They are
   simulations, not people: they make the loop run, they say nothing of how people label;
4. ``finexl label merge`` the two files; 5. ``finexl bench score`` the explanations against the consensus.

    python scripts/label_loop.py --out runs/label-loop [--n 64] [--samples auto] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from finexl.bench.labeling import read_task
from finexl.bench.labels import Label, level_of, write_labels
from finexl.bench.measure import measure
from finexl.cli import main
from finexl.explanation.pipeline import explain
from finexl.explanation.result import Explanation
from finexl.report import write_report

MODELS = {"red": ("toy:red", 1.0), "darker": ("toy:darker", 1.0), "unchanged": ("toy:red", 0.0)}
SIMULATED = "simulated rater: the toy world's judge with its null"


def judge_answers(reading: dict, aspects: list[str]) -> dict[str, tuple[str, int, str]]:
    """The judge's answer per aspect it reads: (direction, level, toward)."""
    out = {}
    for name, r in reading["categorical"].items():
        if name in aspects:
            moved, top = r["moved"], r["most_increased"]
            level = max(1, level_of(r["difference"][top])) if moved else 0
            out[name] = ("increase", level, top) if moved else ("none", 0, "")
    for name, r in reading["graded"].items():
        if name in aspects:
            direction = "increase" if r["difference"] > 0 else "decrease"
            level = max(1, level_of(r["difference"])) if r["moved"] else 0
            out[name] = (direction, level, "") if r["moved"] else ("none", 0, "")
    return out


def noisy(answers: dict, rng: np.random.Generator) -> dict:
    out = {}
    for aspect, (direction, level, toward) in answers.items():
        if rng.random() < 0.1:  # a verdict flipped
            direction, level = ("none", 0) if level else ("increase", 1)
        elif level and rng.random() < 0.25:  # a level off by one
            level = int(np.clip(level + rng.choice([-1, 1]), 1, 3))
        out[aspect] = (direction, level, toward)
    return out


def main_loop(args: argparse.Namespace) -> int:
    out = Path(args.out)
    t0 = time.perf_counter()
    folders = []
    for name, (lora, scale) in MODELS.items():
        folder = out / "explained" / name
        if not (folder / "explanation.json").is_file():
            e = explain(
                lora=lora,
                scale=scale,
                samples=args.samples if args.samples == "auto" else int(args.samples),
                cache_dir=args.cache,
                report_pairs=8,
            )
            e.save(folder, overwrite=True)
            write_report(folder, overwrite=True)
        folders.append(folder)
    print(f"1. explained {len(folders)} models ({time.perf_counter() - t0:.0f} s)")
    task_dir = out / "task"
    assert main(["label", "make", *map(str, folders), "--out", str(task_dir), "--overwrite", "-q"]) == 0
    task, units = read_task(task_dir)
    rng = np.random.default_rng(args.seed)
    files = {"judge": [], "judge-noisy": []}
    for folder in folders:
        e = Explanation.from_json(folder)
        target = e.target
        reading = measure(
            target["lora"], target["model"], scale=target["scale"], n=args.n, seed=args.seed, cache_dir=args.cache
        )
        aspects = [a for m, a in units if m == folder.name]
        answers = judge_answers(reading, aspects)
        for rater, given in (("judge", answers), ("judge-noisy", noisy(answers, rng))):
            files[rater].extend(
                Label(
                    folder.name,
                    aspect,
                    direction,
                    level,
                    f"{SIMULATED}; toward {toward}" if toward else SIMULATED,
                    rater,
                    task,
                )
                for aspect, (direction, level, toward) in sorted(given.items())
            )
    paths = []
    for rater, labels in files.items():
        path = out / f"{rater}.jsonl"
        write_labels(path, labels)
        paths.append(str(path))
    print(
        f"3. two simulated raters answered {len(files['judge'])} of {len(units)} units (the judge reads "
        f"{len(files['judge']) // len(folders)} of the bank's aspects)"
    )
    consensus = out / "consensus.jsonl"
    code = main(
        [
            "label",
            "merge",
            *paths,
            "--task",
            str(task_dir),
            "--out",
            str(consensus),
            "--overwrite",
            "--resamples",
            "200",
            "--json",
            str(out / "agreement.json"),
        ]
    )
    if code:
        return code
    code = main(["bench", "score", str(consensus), *map(str, folders), "--json", str(out / "scores.json")])
    print(f"the loop took {time.perf_counter() - t0:.0f} s")
    json.loads((out / "scores.json").read_text())  # written and readable
    return code


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="working folder")
    parser.add_argument("--n", type=int, default=64, help="images per model the judge reads (default 64)")
    parser.add_argument("--samples", default="auto", help="pairs per explanation, or auto (the default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", help="image cache folder")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sys.exit(main_loop(args))
