"""How long `import finexl` takes in a fresh process, beside a bare interpreter and `import torch`, side by side.

    python scripts/time_import.py [--runs 7]

Prints the median wall seconds of each over the runs; `import finexl` must stay under 1 s (issue 22) and load no
torch (the public API is imported lazily).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": "pass",
    "import finexl": "import sys, finexl; assert 'torch' not in sys.modules",
    "import torch": "import torch",
    "finexl.explain (first use)": "import finexl; finexl.explain",
}


def seconds(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    for name, code in CASES.items():
        times = [seconds(code) for _ in range(args.runs)]
        print(f"{name:<28} median {statistics.median(times):6.3f} s   (min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()
