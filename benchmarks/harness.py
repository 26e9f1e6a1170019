"""What the in-process benchmarks share: their --threads option, a seeded input, and timing in rotated rounds.

Each figure is a median over rounds; a ratio is the median of per-round ratios, and the order of the timed
calls rotates every round, so that drift in machine load and position in the round hit every candidate alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def parser(doc: str | None, threads: int = 1) -> argparse.ArgumentParser:
    """An argument parser that prints doc as it is written, with the --threads option (see set_threads)."""
    parsed = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    # one thread by default: on a shared machine a busy core stalls a multi-threaded forward at every
    # barrier, which swamps the small differences these benchmarks look for
    parsed.add_argument(
        "--threads", type=int, default=threads, help=f"torch threads (default {threads}; 0: torch's choice)"
    )
    return parsed


def set_threads(threads: int) -> None:
    """Run torch on threads threads (0: leave torch's own choice)."""
    if threads:
        torch.set_num_threads(threads)


def images(batch: int, size: int) -> torch.Tensor:
    """A seeded (batch, 3, size, size) input: the same in every run."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call; freeing what it returns (a model, say) is left out of the timing."""
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def rotated(items: Sequence[T], round_index: int) -> list[T]:
    """items in round round_index's order: started round_index places later, wrapping around."""
    start = round_index % len(items)
    return [*items[start:], *items[:start]]


def timed_rounds(calls: Sequence[Callable[[], object]], runs: int, warmup: int = 1) -> list[list[float]]:
    """Each call's wall times over runs rounds in a rotating order, after warmup untimed rounds.

    The untimed rounds take the one-off costs (kernel selection, allocator growth) out of the figures.
    """
    for _ in range(warmup):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    for r in range(runs):
        for j in rotated(range(len(calls)), r):
            times[j].append(seconds(calls[j]))
    return times


def median_ratio(samples: Sequence[float], reference: Sequence[float]) -> float:
    """The median over rounds of samples[r] / reference[r]."""
    return statistics.median(s / b for s, b in zip(samples, reference, strict=True))
