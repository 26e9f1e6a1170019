"""Create time with one-pass init against the same architecture built with torch's default init first.

Usage: python benchmarks/create_time.py [--models NAME ...] [--runs N] [--threads T ...]

Per model, each round times, in an order swapped every round (so machine drift hits both alike):
- ordinary: the constructor run for real: every Conv2d/Linear/BatchNorm runs torch's default init, then the
  architecture's own init overwrites what it sets (the peer's way, and zoo's before one-pass init);
- create_model: zoo.create_model(name) with random weights: for a family that defines init_all_weights, its
  parameters are built unwritten and initialised once, the random fills spread over torch's threads;
  others take the ordinary path.
It prints the medians and the median per-round ratio create_model / ordinary. Target: <= 0.6.
Both are timed at each thread count given (default: 1, and torch's default for this machine): torch draws
random numbers on one thread, so only create_model gains from more.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import statistics
import time
from collections.abc import Callable, Iterator, Sequence

import attrs
import torch

import zoo
from zoo.api import default_zoo
from zoo.archs.catalogue import FAMILIES
from zoo.domain.values import BuildRequest
from zoo.services.builder import Builder, initialises_itself

# torch's own choice for this machine, read before a caller sets another
DEFAULT_THREADS = torch.get_num_threads()


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
    threads: int
    ordinary_s: float
    create_s: float
    ratio: float


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch.set_num_threads(threads) inside, the former count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure(names: Sequence[str], runs: int = 7, threads: int = 1) -> list[CreateTime]:
    """Time create_model against the ordinary construction for each name on `threads` torch threads."""
    with torch_threads(threads):
        return [_measure_one(name, runs, threads) for name in names]


def _measure_one(name: str, runs: int, threads: int) -> CreateTime:
    """One name's rounds, the two paths interleaved round by round."""
    spec = default_zoo().get_spec(name)
    kwargs = Builder().model_kwargs(spec, BuildRequest(), spec.get_cfg(""))
    ordinary = functools.partial(spec.constructor, **kwargs)
    create = functools.partial(zoo.create_model, name)
    params = sum(p.numel() for p in create().parameters())  # also warms imports and the allocator
    ordinary()
    times: dict[str, list[float]] = {"ordinary": [], "create": []}
    for r in range(runs):
        order: list[tuple[str, Callable[[], object]]] = [("ordinary", ordinary), ("create", create)]
        for key, fn in order if r % 2 == 0 else order[::-1]:
            gc.collect()
            times[key].append(seconds(fn))
    return CreateTime(
        name=name,
        params=params,
        one_pass=initialises_itself(spec),
        threads=threads,
        ordinary_s=statistics.median(times["ordinary"]),
        create_s=statistics.median(times["create"]),
        ratio=statistics.median(c / o for c, o in zip(times["create"], times["ordinary"], strict=True)),
    )


def thread_counts(asked: Sequence[int] = ()) -> list[int]:
    """The thread counts to time: those asked (0: torch's default), else 1 and torch's default."""
    counts = [t or DEFAULT_THREADS for t in asked] if asked else [1, DEFAULT_THREADS]
    return sorted(set(counts))


def measure_threads(names: Sequence[str], runs: int, threads: Sequence[int]) -> list[CreateTime]:
    """measure() at each thread count, rows grouped by count."""
    return [row for t in threads for row in measure(names, runs, t)]


def report(rows: Sequence[CreateTime]) -> str:
    """The rows as a table."""
    lines = [f"{'model':16} {'params':>8} {'path':>9} {'threads':>7} {'ordinary':>10} {'create':>10} {'ratio':>6}"]
    for r in rows:
        lines.append(
            f"{r.name:16} {r.params / 1e6:7.1f}M {'one-pass' if r.one_pass else 'ordinary':>9} {r.threads:7d} "
            f"{r.ordinary_s * 1000:7.0f} ms {r.create_s * 1000:7.0f} ms {r.ratio:6.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=default_models())
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[], help=f"torch thread counts (default: 1 and {DEFAULT_THREADS})"
    )
    args = parser.parse_args()
    print(f"create time, {args.runs} rounds, torch {torch.__version__}")
    print(report(measure_threads(args.models, args.runs, thread_counts(args.threads))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
