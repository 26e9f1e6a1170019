"""Measure what each registered name costs the test tiers, and project the suite's time to more names.

Usage: python tools/tier_costs.py [--tier2 NAME ...] [--names N ...] [--workers W]

Tier 1 (tests/every_name, every name on the meta device) runs in one pytest process (-n 0) with this
file as a plugin, which times each test (setup, call and teardown) in CPU and wall seconds; a name's
cost is its tests' (those marked every_name or drawn_names), and what is left of the process's total
is the fixed cost (start-up, imports, collection, the other tests). With --tier2 the drawn tier's
properties run on the names given (--all-names, so that the draw does not leave them out; `--tier2 all`
runs every name) and are measured the same way, with the process's resident memory after each test
(the tests that raised it most are listed: in one process the suite's memory shows as a worker's does).

The projection for N names: tier 1 is fixed + N x (mean per name) / W workers; the drawn tier draws
N / runs_for(N) names (at most PER_SLOT, tests/draw.py: the slots grow with the names) plus one per
family a run, each at the measured mean. CPU seconds say what dedicated cores would take; wall seconds
are this machine as it is now: on a machine others are using, the two differ, and say so when you
quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from pathlib import Path

import attrs
import pytest

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
    "tests/property/test_timm_dropin.py",
    "tests/unit/test_fuse.py",
    "tests/unit/test_sync_batchnorm.py",
    "tests/unit/test_init_once.py",
    "tests/unit/test_features.py",
]


_TIMES: dict[str, tuple[float, float, bool, int]] = {}


def _resident_mib() -> int:
    """This process's resident memory now (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def pytest_configure(config: pytest.Config) -> None:
    """As a plugin: import torch._dynamo before the first test, so its one-time import (some 3 s, which the
    first meta Linear triggers) counts as the process's fixed cost, not as the first such name's. A whole
    run imports it anyway (the compile and export tests)."""
    del config
    import torch._dynamo  # noqa: F401


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """As a pytest plugin (-p tier_costs): each test's CPU and wall seconds, setup and teardown included."""
    cpu, wall = time.process_time(), time.monotonic()
    result = yield
    tiered = any(item.get_closest_marker(m) is not None for m in ("every_name", "drawn_names"))
    _TIMES[item.nodeid] = (time.process_time() - cpu, time.monotonic() - wall, tiered, _resident_mib())
    return result


def pytest_sessionfinish() -> None:
    out = os.environ.get("TIER_COSTS_OUT")
    if out:
        Path(out).write_text(json.dumps(_TIMES))


@attrs.frozen
class Costs:
    """One pytest process's costs: its CPU and wall seconds, and each registered name's (its tests')."""

    label: str
    cpu: float
    wall: float
    tests: int
    per_name: dict[str, tuple[float, float]]  # name -> (cpu, wall)
    resident: list[tuple[str, int]]  # (test, the process's resident MiB after it), in the order run

    def mean(self, which: int) -> float:
        return statistics.mean(c[which] for c in self.per_name.values()) if self.per_name else 0.0

    def median(self, which: int) -> float:
        return statistics.median(c[which] for c in self.per_name.values()) if self.per_name else 0.0

    def fixed(self, which: int) -> float:
        """What the process spent outside the names' tests: start-up, imports, collection, name-less tests."""
        total = self.cpu if which == 0 else self.wall
        return total - sum(c[which] for c in self.per_name.values())


def run_pytest(label: str, paths: list[str], extra: list[str]) -> Costs:
    """Run pytest on paths in one process, timing each test (this module as a plugin)."""
    names = set(zoo.list_models())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "tools")]),
            "TIER_COSTS_OUT": str(out),
        }
        command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-p", "tier_costs"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        subprocess.run([*command, *extra, *paths], cwd=ROOT, env=env, check=False, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times: dict[str, tuple[float, float, bool, int]] = json.loads(out.read_text())
    per_name: dict[str, tuple[float, float]] = {}
    for nodeid, (cpu, seconds, tiered, _) in times.items():
        if not tiered:
            continue  # a test of a fixed list of names (a family's representative, say): not per registered name
        params = nodeid[nodeid.find("[") + 1 : nodeid.rfind("]")] if "[" in nodeid else ""
        name = next((part for part in params.split("-") if part in names), None)
        if name is not None:
            c, w = per_name.get(name, (0.0, 0.0))
            per_name[name] = (c + cpu, w + seconds)
    cpu_total = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    resident = [(nodeid, int(t[3])) for nodeid, t in times.items()]
    return Costs(label, cpu_total, wall, len(times), per_name, resident)


def describe_memory(costs: Costs, top: int = 8) -> None:
    """The process's resident memory after its tests: the last, the peak, and the tests that raised it most."""
    if not costs.resident:
        return
    pairs = zip(costs.resident, costs.resident[1:], strict=False)  # each test with the one before it
    rises = [(after - before, test, after) for (_, before), (test, after) in pairs]
    print(f"  resident after its tests: last {costs.resident[-1][1]} MiB, most {max(r for _, r in costs.resident)} MiB")
    for rise, test, after in sorted(rises, reverse=True)[:top]:
        print(f"    +{rise} MiB to {after} MiB: {test}")


def describe(costs: Costs) -> None:
    print(f"{costs.label}: {costs.tests} tests, {len(costs.per_name)} names, {costs.cpu:.1f} s CPU, {costs.wall:.1f} s")
    if not costs.per_name:
        return
    for which, kind in ((0, "CPU"), (1, "wall")):
        values = sorted(c[which] for c in costs.per_name.values())
        worst = max(costs.per_name, key=lambda n: costs.per_name[n][which])
        print(
            f"  per name ({kind}): mean {statistics.mean(values):.3f} s, median {statistics.median(values):.3f} s, "
            f"90th percentile {values[int(0.9 * (len(values) - 1))]:.3f} s, max {values[-1]:.3f} s ({worst}); "
            f"fixed {costs.fixed(which):.1f} s"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tier2", nargs="*", metavar="NAME", help="also measure the drawn tier on these names ('all': every name)"
    )
    parser.add_argument("--names", nargs="*", type=int, default=[413, 1000], help="name counts to project to")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default 2, as make unit)")
    args = parser.parse_args(argv)
    families = len(zoo.list_modules())

    tier1 = run_pytest("tier 1 (every name, meta)", TIER_1, ["--hypothesis-seed=0"])
    describe(tier1)
    tier2 = None
    if args.tier2:
        keep = " or ".join(args.tier2)
        extra = ["--all-names"] if args.tier2 == ["all"] else ["--all-names", "-k", keep]
        tier2 = run_pytest(f"tier 2 (drawn; on {', '.join(args.tier2)})", TIER_2, extra)
        describe(tier2)
        describe_memory(tier2)
    # the mean carries today's outliers (a pruned name prunes on meta as it builds, some 1 s): the next
    # issues' names are plain members of existing families, so the median is given beside it
    print(
        f"projection on {args.workers} workers ({families} families as today, draw.runs_for(N) slots), "
        "by CPU and wall seconds, at the per-name mean (median):"
    )
    for n in args.names:
        line = f"  {n} names: tier 1 " + " / ".join(
            f"{(tier1.fixed(w) + n * tier1.mean(w) / args.workers) / 60:.1f} "
            f"({(tier1.fixed(w) + n * tier1.median(w) / args.workers) / 60:.1f}) min"
            for w in (0, 1)
        )
        if tier2 is not None:
            drawn = n / draw.runs_for(n) + families
            line += f"; drawn tier about {drawn:.0f} names a run, " + " / ".join(
                f"{drawn * tier2.mean(w) / args.workers / 60:.1f} "
                f"({drawn * tier2.median(w) / args.workers / 60:.1f}) min"
                for w in (0, 1)
            )
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
