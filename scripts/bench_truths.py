"""The benchmark's metrics under each truth, from the records of `finexl bench run --json` files.

    python scripts/bench_truths.py docs/results/bench.json [more.json ...] [--combined OUT.json]

Several files (say the suites run apart) are read as one set of records. For each truth (``judge``: the aspects the
judge reads moving past its own null; ``spec``: the spec's shifted aspects; ``fixed``: the judge's change above 0.10)
it prints how many (model, aspect) pairs count as changed and the metrics table; ``--combined`` writes the records
as one results file that `finexl bench compare` reads.
"""

from __future__ import annotations

import argparse
import json

from finexl.bench.metrics import TRUTH_NAMES, TRUTHS, all_metrics, markdown_table, truth_of
from finexl.utils import atomic_write_json
from finexl.validation import load_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--combined", help="write the records of all the files as one results file")
    args = ap.parse_args()
    records, methods, config = [], None, {}
    for path in args.results:
        obj = load_json(path, "benchmark results")
        records += obj["records"]
        methods = methods or obj["config"]["methods"]
        config = config or obj["config"]
    for truth in TRUTHS:
        changed = [(r["id"], a) for r in records if r["kind"] != "dreambooth" for a in truth_of(r, truth)]
        kinds = {}
        for r in records:
            if r["kind"] != "dreambooth":
                kinds[r["kind"]] = kinds.get(r["kind"], 0) + len(truth_of(r, truth))
        print(f"\n## truth: {truth} ({TRUTH_NAMES[truth]})")
        print(f"{len(changed)} (model, aspect) pairs count as changed: {json.dumps(kinds)}")
        print(markdown_table(all_metrics(records, methods, truth), methods))
    if args.combined:
        atomic_write_json(args.combined, {"config": config | {"truth": "judge"}, "records": records})
        print(f"\nwrote {args.combined}")


if __name__ == "__main__":
    main()
