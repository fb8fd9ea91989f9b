"""Marginal cost of a model in `finexl explain-many` against one cold `finexl explain`, side by side in one run.

    python scripts/bench_many.py --suites suites/collection [--n 20] [--out runs/many] [--json docs/results/many.json]

Builds a manifest of ``--n`` toy LoRAs on the toy base: the models of a built ``collection`` suite
(`finexl bench build collection`), the two shipped LoRAs, then the suite's LoRAs again at scale 0.5 until there are
``--n`` (another scale is another model: its own images). Ids are shuffled hex names, each row tagged with its
family (the spec it was trained on), so `scripts/measure_search.py` can score search on the same index. Then, each
in a fresh process with its own empty image cache and ``--threads`` threads:

1. `finexl explain` of the first model, cold;
2. `finexl explain-many` of all ``--n``, cold.

Marginal time per model = (explain-many wall time - the base's part, which it reports) / n; the ratio to the cold
explain is the target (<= 0.35). The first model's scores from both runs are compared (they must agree).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build_manifest(suite: Path, n: int, seed: int, path: Path) -> list[dict]:
    rows = []
    for folder in sorted(p for p in suite.iterdir() if (p / "truth.json").is_file()):
        truth = json.loads((folder / "truth.json").read_text())
        rows.append({"path": str(folder.resolve()), "family": truth["spec"] or "null"})
    for name in ("red", "darker"):
        truth = json.loads((ROOT / "data" / "toy_loras" / name / "truth.json").read_text())
        rows.append({"path": str((ROOT / "data" / "toy_loras" / name).resolve()), "family": truth["spec"]})
    singles = list(rows)
    while len(rows) < n:
        rows.append({**singles[len(rows) - len(singles)], "scale": 0.5})
    rows = rows[:n]
    rng = np.random.default_rng(seed)
    names = [f"m{int(x):06x}" for x in rng.choice(16**6, size=len(rows), replace=False)]
    manifest = []
    for row, name in zip(rows, names, strict=True):
        family = row["family"].split("@")[0]  # colour=red@1 -> colour=red
        manifest.append({"id": name, "path": row["path"], "scale": row.get("scale", 1.0), "tags": [family]})
    order = rng.permutation(len(manifest))
    manifest = [manifest[i] for i in order]
    path.write_text("".join(json.dumps(r) + "\n" for r in manifest))
    return manifest


def timed(args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "finexl.cli", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        sys.exit(f"finexl {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", required=True, help="a built collection suite folder (suites/collection)")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--out", default=None, help="explain-many output folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_many-"))
    out = Path(args.out) if args.out else work / "many"
    out.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(Path(args.suites), args.n, args.seed, out / "manifest.jsonl")
    first = manifest[0]
    threads = ["--threads", str(args.threads), "-q"]

    cold_s, _ = timed(["explain", "--lora", first["path"], "--scale", str(first["scale"]), "--cache",
                       str(work / "cache-cold"), "--out", str(work / "cold"), *threads])  # fmt: skip
    cold_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    many_s, printed = timed(["explain-many", str(out / "manifest.jsonl"), "--out", str(out), "--cache",
                             str(work / "cache-many"), *threads])  # fmt: skip
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = printed.strip().splitlines()[-1]
    base_s = json.loads((out / "last_run.json").read_text())["base_seconds"]
    cold = json.loads((work / "cold" / "explanation.json").read_text())
    many = json.loads((out / "models" / first["id"] / "explanation.json").read_text())
    many_scores = {a["aspect"]: a["score"] for a in many["aspects"]}
    agree = max(abs(a["score"] - many_scores[a["aspect"]]) for a in cold["aspects"])
    marginal = (many_s - base_s) / args.n
    record = {
        "n_models": args.n, "threads": args.threads, "cold_explain_s": round(cold_s, 1),
        "explain_many_s": round(many_s, 1), "explain_many_base_s": round(base_s, 1),
        "marginal_per_model_s": round(marginal, 1), "ratio_marginal_to_cold": round(marginal / cold_s, 3),
        "peak_rss_mb_max_of_runs": round(max(cold_rss, rss)), "summary": summary,
        "first_model_max_score_difference": agree, "samples": cold["settings"]["samples"],
    }  # fmt: skip
    print(json.dumps(record, indent=1))
    print(f"\nmarginal {marginal:.1f} s per model against {cold_s:.1f} s cold: ratio {marginal / cold_s:.3f} "
          f"(target <= 0.35); {summary}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
