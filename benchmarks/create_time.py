"""Create time with one-pass init against the same architecture built with torch's default init first.

Usage: python benchmarks/create_time.py [--models NAME ...] [--runs N] [--threads T ...] [--phases]

Per model, each round times, in an order swapped every round (so machine drift hits both alike):
- ordinary: the constructor run for real: every Conv2d/Linear/BatchNorm runs torch's default init, then the
  architecture's own init overwrites what it sets (the peer's way, and zoo's before one-pass init);
- create_model: zoo.create_model(name) with random weights: for a family that defines init_all_weights, its
  parameters are built on meta, given back the memory their layers allocated and initialised once, the
  random fills spread over torch's threads; others take the ordinary path.
It prints the medians and the median per-round ratio create_model / ordinary. Target: <= 0.6.
Both are timed at each thread count given (default: 1, and torch's default for this machine): torch draws
random numbers on one thread, so only create_model gains from more.
--phases also splits create_model's one-pass path: the build on meta, materialising, init_all_weights with
the fills spread (zoo.services.parallel_init) and without (serial, torch's global generator, run second on
the same tensors, so without their first-touch page faults), and the minor page faults one create_model
takes (each the median over the rounds).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Sequence

import attrs
import torch

import zoo
from harness import median_ratio, seconds, timed_rounds
from zoo.api import default_zoo
from zoo.archs.catalogue import FAMILIES
from zoo.domain.values import BuildRequest
from zoo.services.builder import Builder, initialises_itself
from zoo.services.parallel_init import parallel_random_fills
from zoo.services.weights.meta import materialize_parameters, parameters_on_meta

# torch's own choice for this machine, read before a caller sets another
DEFAULT_THREADS = torch.get_num_threads()


def default_models() -> list[str]:
    """resnet50 and the first registered name of every other family."""
    return ["resnet50", *(names[0] for module, names in FAMILIES.items() if module != "zoo.archs.resnet")]


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
    kwargs = Builder().model_args(spec, BuildRequest(cfg=spec.default_cfg))
    ordinary = functools.partial(spec.constructor, **kwargs)
    create = functools.partial(zoo.create_model, name)
    params = sum(p.numel() for p in create().parameters())  # also warms imports and the allocator
    ordinary_times, create_times = timed_rounds([ordinary, create], runs)
    return CreateTime(
        name=name,
        params=params,
        one_pass=initialises_itself(spec),
        threads=threads,
        ordinary_s=statistics.median(ordinary_times),
        create_s=statistics.median(create_times),
        ratio=median_ratio(create_times, ordinary_times),
    )


def thread_counts(asked: Sequence[int] = ()) -> list[int]:
    """The thread counts to time: those asked (0: torch's default), else 1 and torch's default."""
    counts = [t or DEFAULT_THREADS for t in asked] if asked else [1, DEFAULT_THREADS]
    return sorted(set(counts))


def measure_threads(names: Sequence[str], runs: int, threads: Sequence[int]) -> list[CreateTime]:
    """measure() at each thread count, rows grouped by count."""
    return [row for t in threads for row in measure(names, runs, t)]


@attrs.frozen
class Phases:
    """Median milliseconds of each step of one-pass creation, and minor page faults per create_model."""

    name: str
    threads: int
    build_ms: float
    materialize_ms: float
    init_ms: float
    serial_init_ms: float
    faults: float


def _millis(fn: Callable[[], object]) -> float:
    return seconds(fn) * 1000


def phases(name: str, runs: int, threads: int) -> Phases:
    """create_model(name)'s one-pass steps, each timed over runs rounds on threads torch threads."""
    spec = default_zoo().get_spec(name)
    kwargs = Builder().model_args(spec, BuildRequest(cfg=spec.default_cfg))
    rows: list[tuple[float, ...]] = []
    with torch_threads(threads):
        zoo.create_model(name)  # warm imports and the allocator
        for _ in range(runs):
            start = time.perf_counter()
            with parameters_on_meta(keep_storage=True) as kept:
                model = spec.constructor(**kwargs)
            built = time.perf_counter()
            materialize_parameters(model, "cpu", kept=kept)
            materialized = time.perf_counter()
            init: Callable[[], object] = getattr(model, "init_all_weights")  # noqa: B009
            with parallel_random_fills():
                init()
            spread = time.perf_counter()
            serial = _millis(init)  # the same tensors again, on the calling thread
            del model
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            zoo.create_model(name)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            rows.append(
                ((built - start) * 1000, (materialized - built) * 1000, (spread - materialized) * 1000, serial, faults)
            )
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    return Phases(name, threads, *medians)


def report_phases(rows: Sequence[Phases]) -> str:
    """The phases as a table."""
    lines = [
        f"{'model':16} {'threads':>7} {'meta build':>10} {'materialise':>11} {'init':>8} {'serial':>8} {'faults':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r.name:16} {r.threads:7d} {r.build_ms:7.1f} ms {r.materialize_ms:8.1f} ms {r.init_ms:5.1f} ms "
            f"{r.serial_init_ms:5.1f} ms {r.faults:7.0f}"
        )
    return "\n".join(lines)


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
    parser.add_argument("--phases", action="store_true", help="also time the steps of one-pass creation")
    args = parser.parse_args()
    print(f"create time, {args.runs} rounds, torch {torch.__version__}")
    print(report(measure_threads(args.models, args.runs, thread_counts(args.threads))))
    if args.phases:
        one_pass = [n for n in args.models if initialises_itself(default_zoo().get_spec(n))]
        print(report_phases([phases(n, args.runs, t) for t in thread_counts(args.threads) for n in one_pass]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
