"""Create time with one-pass init against the same architecture built with torch's default init first.

Usage: python benchmarks/create_time.py [--models NAME ...] [--runs N] [--threads T]

Per model, each round times, in an order swapped every round (so machine drift hits both alike):
- ordinary: the constructor run for real: every Conv2d/Linear/BatchNorm runs torch's default init, then the
  architecture's own init overwrites what it sets (the peer's way, and zoo's before one-pass init);
- create_model: zoo.create_model(name) with random weights: for a family that defines init_all_weights, its
  parameters are built on the meta device and initialised once; others take the ordinary path.
It prints the medians and the median per-round ratio create_model / ordinary. Target: <= 0.6.
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time
from collections.abc import Callable, Sequence

import attrs
import torch

import zoo
from zoo.api import default_zoo
from zoo.archs.catalogue import FAMILIES
from zoo.domain.values import BuildRequest
from zoo.services.builder import Builder, initialises_itself


def default_models() -> list[str]:
    """resnet50 and the first registered name of every other family."""
    return ["resnet50", *(names[0] for module, names in FAMILIES.items() if module != "zoo.archs.resnet")]


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call (the result dropped outside the timing)."""
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    del result
    return elapsed


@attrs.frozen
class CreateTime:
    """One model's figures: median seconds of each path and the median per-round ratio."""

    name: str
    params: int
    one_pass: bool
    ordinary_s: float
    create_s: float
    ratio: float


def measure(names: Sequence[str], runs: int = 7) -> list[CreateTime]:
    """Time create_model against the ordinary construction for each name, interleaved round by round."""
    rows = []
    for name in names:
        spec = default_zoo().get_spec(name)
        kwargs = Builder().model_kwargs(spec, BuildRequest(), spec.get_cfg(""))
        ordinary = functools.partial(spec.constructor, **kwargs)
        create = functools.partial(zoo.create_model, name)
        params = sum(p.numel() for p in create().parameters())  # also warms imports and the allocator
        ordinary()
        times: dict[str, list[float]] = {"ordinary": [], "create": []}
        for r in range(runs):
            order = [("ordinary", ordinary), ("create", create)]
            for key, fn in order if r % 2 == 0 else order[::-1]:
                gc.collect()
                times[key].append(seconds(fn))
        ratio = statistics.median(c / o for c, o in zip(times["create"], times["ordinary"], strict=True))
        rows.append(
            CreateTime(
                name=name,
                params=params,
                one_pass=initialises_itself(spec),
                ordinary_s=statistics.median(times["ordinary"]),
                create_s=statistics.median(times["create"]),
                ratio=ratio,
            )
        )
    return rows


def report(rows: Sequence[CreateTime]) -> str:
    """The rows as a table."""
    lines = [f"{'model':16} {'params':>8} {'path':>9} {'ordinary':>10} {'create':>10} {'ratio':>6}"]
    for r in rows:
        lines.append(
            f"{r.name:16} {r.params / 1e6:7.1f}M {'one-pass' if r.one_pass else 'ordinary':>9} "
            f"{r.ordinary_s * 1000:7.0f} ms {r.create_s * 1000:7.0f} ms {r.ratio:6.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=default_models())
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"create time, {args.runs} rounds, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(report(measure(args.models, args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
