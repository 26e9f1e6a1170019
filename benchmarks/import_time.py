"""Cost of `import zoo; zoo.list_models()` on top of `import torch`, over fresh processes.

Usage: python benchmarks/import_time.py [--runs N]
Prints the median wall time of each snippet and their difference. Target: under 0.15 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

BASELINE = "import torch"
CANDIDATE = "import torch; import zoo; zoo.list_models()"


def run_once(code: str) -> float:
    """Wall time of a fresh interpreter running code (interpreter start-up included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def measure(runs: int = 15) -> tuple[float, float]:
    """Median seconds of BASELINE and of CANDIDATE over runs fresh interpreters each, interleaved."""
    run_once(CANDIDATE)  # warm the OS file cache for both
    base: list[float] = []
    cand: list[float] = []
    for _ in range(runs):  # interleaved so drift in machine load hits both alike
        base.append(run_once(BASELINE))
        cand.append(run_once(CANDIDATE))
    return statistics.median(base), statistics.median(cand)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    b, c = measure(args.runs)
    print(f"import torch:                      median {b:.3f} s over {args.runs} runs")
    print(f"import torch, zoo; list_models():  median {c:.3f} s")
    print(f"zoo's own cost:                    {c - b:+.3f} s (target < 0.150 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
