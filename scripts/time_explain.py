"""Wall time of the default `finexl explain` on the toy world: cold (empty cache) and with base images cached.

Each run is a fresh `finexl explain` process (imports and model loading included), as a user would start it:

    python scripts/time_explain.py --lora A --lora2 B [--json docs/results/explain_timing.json]

1. cold: A with an empty cache (base, null and personalized images, text directions all computed);
2. cached base: B (another LoRA on the same base) with that cache, so only B's images are sampled;
3. fully cached: A again (everything from the cache).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "finexl.cli", "explain", *args, "-q"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lora", required=True)
    ap.add_argument("--lora2", required=True)
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        result = {
            "cold": run(["--lora", args.lora, "--cache", cache]),
            "base_cached": run(["--lora", args.lora2, "--cache", cache]),
            "all_cached": run(["--lora", args.lora, "--cache", cache]),
        }
    for name, seconds in result.items():
        print(f"{name:<12} {seconds:6.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({k: round(v, 1) for k, v in result.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
