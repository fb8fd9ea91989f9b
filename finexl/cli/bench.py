"""``finexl bench build | run | compare | score``."""

from __future__ import annotations

import argparse
from pathlib import Path

from finexl.bench.labels import labels_from_records, people_table, score_explanations, write_labels
from finexl.bench.metrics import TRUTH_NAMES, TRUTHS, UNIT_NAMES, compare_bench, comparison_table, markdown_table
from finexl.bench.runner import BenchConfig, run_bench
from finexl.bench.suites import SUITES, BuildConfig, build_suite
from finexl.cli.common import (
    add_compute_arguments,
    nonnegative_int,
    parse_list,
    set_threads,
)
from finexl.config import add_arguments, from_args, given
from finexl.utils import atomic_write_json


def cmd_bench_build(args: argparse.Namespace) -> int:

    set_threads(args)
    cfg = from_args(BuildConfig, args)
    records = build_suite(args.suite, Path(args.out) / args.suite, cfg, base=args.base, progress=not args.quiet)
    print(f"suite {args.suite}: {len(records)} models in {Path(args.out) / args.suite / 'models'}")
    return 0


def cmd_bench_run(args: argparse.Namespace) -> int:

    set_threads(args)
    names = parse_list(args.suite, "SUITE")
    quick = {"samples": 32, "n_bootstrap": 50, "n_null": 50} if args.quick else {}
    if "n_bootstrap" in given(args, BenchConfig) and "n_null" not in given(args, BenchConfig):
        quick.setdefault("n_null", args.n_bootstrap)  # --bootstrap sets both resample counts unless --n-null is given
    cfg = from_args(BenchConfig, args, **quick)
    methods = list(cfg.methods)
    result = run_bench(args.suites, names, cfg, progress=not args.quiet)
    metrics, comparison = result["metrics"], result["comparison"]
    print(f"precision, recall and F1 against: {TRUTH_NAMES[cfg.truth]}")
    print(markdown_table(metrics, methods))
    if "_multi_selection_by_judge" in metrics:
        by_judge = metrics["_multi_selection_by_judge"]
        print(f"\nmulti_selection made from the judge's readings of what changed: {by_judge:.3f}")
    if "_top1_of_judge" in metrics:
        print(f"top1 made from the judge's readings (shifted aspect moved most): {metrics['_top1_of_judge']:.3f}")
    if "_paired_over_unpaired_interval_width" in metrics:
        print(f"\npaired / unpaired interval width: {metrics['_paired_over_unpaired_interval_width']:.3f}")
    if comparison is not None:
        print(
            f"\nfinexl against the other methods, paired bootstrap over the models ({comparison['resamples']} "
            f"resamples; `finexl bench compare` redoes it from the JSON):\n{comparison_table(comparison)}"
        )
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.labels:
        write_labels(args.labels, labels_from_records(result["records"], cfg.truth))
        print(f"wrote the suites' labels to {args.labels}")
    return 0


def cmd_bench_compare(args: argparse.Namespace) -> int:

    comparison = compare_bench(
        args.results,
        reference=args.reference,
        n_resamples=args.resamples,
        seed=args.seed,
        level=args.level,
        truth=args.truth,
    )
    units = ", ".join(f"{n} {UNIT_NAMES[kind]}" for kind, n in comparison["units"].items() if n)
    print(
        f"{args.reference} against the other methods of {args.results}, paired bootstrap over {units} "
        f"({args.resamples} resamples, seed {args.seed}; truth: {comparison['truth']}):"
    )
    print(comparison_table(comparison))
    if args.json:
        atomic_write_json(args.json, comparison)
        print(f"wrote {args.json}")
    return 0


def cmd_bench_score(args: argparse.Namespace) -> int:

    result = score_explanations(args.labels, args.explanations)
    print(f"{result['scores']['overall']['labels']} labels of {len(args.explanations)} explanations")
    print(people_table(result))
    if result["ceiling"] is None:
        print("no rater ceiling: the labels carry no votes of two or more raters (finexl label merge writes them)")
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def add_parsers(sub, common: argparse.ArgumentParser) -> None:

    bench = sub.add_parser("bench", help="benchmark suites of toy personalizations with known ground truth")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="SUBCOMMAND")
    p = bench_sub.add_parser(
        "build",
        parents=[common],
        help="train the LoRAs of a suite (resumable)",
        description="Train every LoRA of a suite with finexl's trainer on toy data shifted by its spec: 'single' "
        "(9 aspects x 5 strength levels, increases and decreases), 'steps' (the same 9 shifts at full strength, "
        "5 levels as snapshots of one slow run at 0.2 ... 1.0 of its steps), 'scale' (one LoRA per shift at the "
        "usual learning rate, sampled at LoRA scales 0.2 ... 1.0), 'null' (8 LoRAs on unshifted data), 'multi' "
        "(mixtures of 2 and 3 aspects at 3 proportions), 'dreambooth' (9 subjects, 'a sks shape'), 'quick' "
        "(a small subset for CI). Finished models are kept; rerunning finishes an interrupted build. About a "
        "minute per model on one CPU core.",
    )
    p.add_argument("suite", choices=list(SUITES), help="which suite")
    p.add_argument("--out", default="suites", help="suites folder; the suite goes to OUT/SUITE (default suites)")
    p.add_argument("--base", help="base pipeline folder (default: the toy preset's, data/toy_sd)")
    add_arguments(p, BuildConfig)
    add_compute_arguments(p, device=False)
    p.set_defaults(func=cmd_bench_build)

    p = bench_sub.add_parser(
        "run",
        parents=[common],
        help="score every method on built suites; prints a Markdown table (method x metric)",
        description="For every model of the suites: sample base and personalized on the same prompts and seeds "
        "(cached), read both with the judge, embed once with the toy CLIP, and explain with every method; then "
        "compute the metrics (see finexl/bench/metrics.py). SUITE may list several, e.g. single,null,multi.",
    )
    p.add_argument("suite", help=f"suite name(s), comma-separated: {', '.join(SUITES)}")
    p.add_argument("--suites", default="suites", help="folder holding the built suites (default suites)")
    add_arguments(p, BenchConfig)
    p.add_argument(
        "--quick", action="store_true", help="32 pairs and 50 resamples per model (for CI, with suite quick)"
    )
    p.add_argument("--json", help="write metrics and per-model records to this JSON file")
    p.add_argument("--labels", help="export the suites' ground truth as a JSONL label file")
    add_compute_arguments(p, device=False)
    p.set_defaults(func=cmd_bench_run)

    p = bench_sub.add_parser(
        "compare",
        parents=[common],
        help="how sure the table's ordering is: finexl against every other method, paired bootstrap over models",
        description="Read the records of a `finexl bench run --json` file and resample its units (single-aspect "
        "families, mixtures, nulls, DreamBooth subjects) with replacement, scoring every method on the same "
        "resamples. For each metric: the reference method's value with a percentile interval, the best other method "
        "and the difference to it with its interval, and the methods the reference is significantly worse or better "
        "than (the difference's interval excludes 0; per pair, not corrected for the number of pairs).",
    )
    p.add_argument("results", help="JSON written by `finexl bench run --json`")
    p.add_argument("--reference", default="finexl", help="the method compared with the others (default finexl)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the resampling (default 0)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument(
        "--truth",
        choices=TRUTHS,
        help="what counts as changed (default: the file's own; spec for files made before the judge had a null)",
    )
    p.add_argument("--json", help="write the comparison to this JSON file")
    p.set_defaults(func=cmd_bench_compare)

    p = bench_sub.add_parser(
        "score",
        parents=[common],
        help="score explanations and their sentences against labels (a consensus of raters, or any label file)",
        description="Each line of LABELS: {model, aspect, direction (increase|decrease|none), level 0-3, text}; "
        "a consensus written by 'finexl label merge' also holds each rater's vote. EXPLANATIONS are "
        "explanation.json files or folders holding one; the model id is the folder name. Prints precision, recall, "
        "F1, direction accuracy and Spearman(score, level) per aspect and overall, for the scores, for the "
        "templated sentences and the stored LLM sentences (read with the faithfulness check's parser), beside the "
        "raters' ceiling: how well one rater predicts the consensus of the others on the same metric.",
    )
    p.add_argument("labels", help="JSONL label file (e.g. consensus.jsonl)")
    p.add_argument("explanations", nargs="+", help="explanation.json files or their folders")
    p.add_argument("--json", help="write the scores to this JSON file")
    p.set_defaults(func=cmd_bench_score)
