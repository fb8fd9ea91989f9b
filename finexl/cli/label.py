"""``finexl label make`` and ``finexl label merge``: a labeling study of explained models."""

from __future__ import annotations

import argparse
from pathlib import Path

from finexl.bench.agreement import agreement_table, merge, write_consensus
from finexl.bench.labeling import make_task, read_task
from finexl.cli.common import positive_int
from finexl.errors import InputError
from finexl.utils import atomic_write_json


def cmd_label_make(args: argparse.Namespace) -> int:
    page = make_task(args.explained, args.out, pairs=args.pairs, title=args.title, overwrite=args.overwrite)
    print(f"wrote {page} and {Path(args.out) / 'task.json'}: open the page in a browser (no server needed), or send")
    print(
        "it to a rater; each exports RATER.jsonl, then: finexl label merge RATER.jsonl... --task "
        f"{args.out} --out consensus.jsonl"
    )
    return 0


def cmd_label_merge(args: argparse.Namespace) -> int:
    task, units = read_task(args.task) if args.task else (None, None)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    merged = merge(args.labels, units, n_resamples=args.resamples)
    if task is not None and merged.task != task:
        raise InputError(f"the labels are of task {merged.task!r}, not of {args.task} ({task!r})")
    print(
        f"{len(merged.raters)} raters ({', '.join(merged.raters)}), {len(merged.units)} units (model, aspect) "
        f"of task {merged.task}"
    )
    for rater, n in merged.missing.items():
        if n:
            print(f"  {rater} left {n} of {len(merged.units)} unanswered")
    print(agreement_table(merged))
    write_consensus(out, merged)
    print(f"wrote {out}: {len(merged.consensus)} consensus labels, {sum(bool(x.tie) for x in merged.consensus)} ties")
    if args.json:
        atomic_write_json(
            args.json,
            {"raters": merged.raters, "task": merged.task, "missing": merged.missing, "agreement": merged.agreement},
        )
        print(f"wrote {args.json}")
    return 0


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    label = sub.add_parser("label", help="label explained models by hand: a page for raters, agreement, consensus")
    label_sub = label.add_subparsers(dest="label_command", required=True, metavar="SUBCOMMAND")
    p = label_sub.add_parser(
        "make",
        parents=[common],
        help="write TASK/label.html, a self-contained labeling page for explained models",
        description="EXPLAINED are explain --out folders or an explain-many folder. The page shows each model as "
        "pairs of base and personalized images with their prompts and asks, for each aspect of its concept bank: "
        "did it change (no change / more / less), how much (slight / moderate / strong), toward what (free text). "
        "The explanation itself is not shown. No server and no network: open it from disk or send it to a rater. "
        "Answers are kept in the browser as they are given; models and aspects come in an order shuffled per "
        "rater; the export is finexl's label format with the rater's id and the task's digest (TASK/task.json).",
    )
    p.add_argument("explained", nargs="+", help="explain --out folders, or an explain-many folder")
    p.add_argument("--out", required=True, help="task folder: label.html and task.json")
    p.add_argument("--pairs", type=positive_int, default=8, help="image pairs shown per model (default 8)")
    p.add_argument("--title", help="the page's title (default: 'Label N models')")
    p.add_argument("--overwrite", action="store_true", help="replace an existing label.html")
    p.set_defaults(func=cmd_label_make)

    p = label_sub.add_parser(
        "merge",
        parents=[common],
        help="check raters' label files together, print their agreement, write the consensus",
        description="Every file is checked (schema, one rater and one task per file, the same task in every file, "
        "distinct rater ids, no duplicate answer, with --task only its models and aspects); a file may leave "
        "answers out (they are counted). Agreement, overall and per aspect, with 95%% bootstrap intervals over the "
        "units: Krippendorff's alpha for the signed level (-3 ... 3, ordinal) and Fleiss' kappa for changed or "
        "not. The consensus of a unit: changed or not and the direction by majority, the level the median of the "
        "changed answers (an even split is marked as a tie and read as no change), "
        "with the number of raters and each rater's vote, which 'finexl bench score' reads for the raters' ceiling.",
    )
    p.add_argument("labels", nargs="+", help="the raters' exported label files (RATER.jsonl)")
    p.add_argument("--out", required=True, help="the consensus label file to write (JSONL)")
    p.add_argument("--task", help="the task folder (or its task.json): checks models, aspects and the digest")
    p.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--json", help="write the agreement to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_label_merge)
