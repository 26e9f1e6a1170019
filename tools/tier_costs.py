"""Measure what each registered name costs the test tiers, and project the suite's time to more names.

Usage: python tools/tier_costs.py [--tier2 NAME ...] [--names N ...] [--workers W]

Tier 1 (tests/every_name, every name on the meta device) runs in one process (-n 0); each name's cost
is the time of its tests (setup, call and teardown, from pytest's JUnit XML), and what is left of the
process's wall time is the fixed cost (start-up, imports, collection). With --tier2 the drawn tier's
properties run on the names given (--all-names, so the draw does not leave them out), one process, and
each name's cost is measured the same way; the tests that visit no registered name are not counted.

The projection for N names: tier 1 is fixed + N x (mean per name) / W workers; the drawn tier draws
about N / RUNS + (one per family) names a run (tests/draw.py), each at the measured mean. Figures are
from this machine as it is now: say whether it was shared when you quote them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import draw  # noqa: E402
import zoo  # noqa: E402

TIER_1 = ["tests/every_name"]
TIER_2 = [
    "tests/property/test_models.py",
    "tests/property/test_layouts.py",
    "tests/property/test_feature_subsets.py",
    "tests/property/test_surface.py",
    "tests/property/test_exportable.py",
    "tests/unit/test_fuse.py",
    "tests/unit/test_sync_batchnorm.py",
    "tests/unit/test_init_once.py",
    "tests/unit/test_features.py",
]


def run_pytest(paths: list[str], extra: list[str]) -> tuple[float, dict[str, float], int]:
    """Run pytest on paths in one process: wall seconds, seconds per registered name, tests run."""
    names = set(zoo.list_models())
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", f"--junitxml={report}"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
        start = time.monotonic()
        subprocess.run([*command, *extra, *paths], cwd=ROOT, env=env, check=False, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - start
        per_name: dict[str, float] = defaultdict(float)
        cases = ET.parse(report).getroot().iter("testcase")
        count = 0
        for case in cases:
            count += 1
            test = case.get("name", "")
            params = test[test.find("[") + 1 : -1] if "[" in test else ""
            name = next((part for part in params.split("-") if part in names), None)
            if name is not None:
                per_name[name] += float(case.get("time", 0.0))
    return wall, dict(per_name), count


def describe(label: str, wall: float, per_name: dict[str, float], count: int) -> float:
    costs = sorted(per_name.values())
    total = sum(costs)
    print(f"{label}: {count} tests, {len(costs)} names, {wall:.1f} s wall in one process")
    if not costs:
        return 0.0
    print(
        f"  per name: mean {statistics.mean(costs):.3f} s, median {statistics.median(costs):.3f} s, "
        f"90th percentile {costs[int(0.9 * (len(costs) - 1))]:.3f} s, max {costs[-1]:.3f} s "
        f"({max(per_name, key=per_name.__getitem__)}); fixed {wall - total:.1f} s"
    )
    return statistics.mean(costs)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier2", nargs="*", metavar="NAME", help="also measure the drawn tier on these names")
    parser.add_argument("--names", nargs="*", type=int, default=[413, 1000], help="name counts to project to")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default 2, as make unit)")
    args = parser.parse_args(argv)
    families = len(zoo.list_modules())

    wall, per_name, count = run_pytest(TIER_1, ["--hypothesis-seed=0"])
    mean1 = describe("tier 1 (every name, meta)", wall, per_name, count)
    fixed1 = wall - sum(per_name.values())
    mean2 = 0.0
    if args.tier2:
        keep = " or ".join(args.tier2)
        wall2, per_name2, count2 = run_pytest(TIER_2, ["--all-names", "-k", keep])
        mean2 = describe(f"tier 2 (drawn; measured on {', '.join(args.tier2)})", wall2, per_name2, count2)
    print(f"projection on {args.workers} workers ({families} families as today; RUNS = {draw.RUNS}):")
    for n in args.names:
        tier1 = fixed1 + n * mean1 / args.workers
        line = f"  {n} names: tier 1 {tier1 / 60:.1f} min"
        if args.tier2:
            drawn = n / draw.RUNS + families
            line += f"; drawn tier about {drawn:.0f} names a run, {drawn * mean2 / args.workers / 60:.1f} min"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
