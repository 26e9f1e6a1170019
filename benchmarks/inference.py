"""Eval forward of zoo.fuse_for_inference copies against the models they came from, contiguous and channels_last.

Usage: python benchmarks/inference.py [--models NAME ...] [--batches B ...] [--runs N] [--size S] [--threads T]

Per model and batch size, each round times four forwards under inference_mode, in an order rotated every
round (so that drift in machine load hits all alike): the model as built (contiguous, the reference), its
fused copy, and both again converted to channels_last (weights and input). It prints the reference's median
and each variant's median per-round ratio to it: below 1 is faster.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable, Sequence

import attrs
import torch
from torch import nn

import zoo
from create_time import default_models

VARIANTS = ("fused", "channels_last", "fused, channels_last")


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@attrs.frozen
class InferenceTime:
    """One model at one batch size: the reference's median seconds, and each VARIANTS' median ratio to it."""

    name: str
    batch: int
    folded: int
    reference_s: float
    ratios: tuple[float, ...]


def measure(
    names: Sequence[str], batches: Sequence[int] = (1, 8), runs: int = 7, size: int = 224
) -> list[InferenceTime]:
    """Time the reference and VARIANTS for each name and batch size."""
    rows = []
    for name in names:
        torch.manual_seed(0)
        model = zoo.create_model(name).eval()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "fuse_for_inference: .* left unfolded", UserWarning)
            fused = zoo.fuse_for_inference(model)
        folded = sum(type(m).__name__ == "FoldedNorm" for m in fused.modules())
        models: list[nn.Module] = [model, fused, _channels_last(model), _channels_last(fused)]
        for batch in batches:
            x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
            x_cl = x.contiguous(memory_format=torch.channels_last)
            inputs = [x, x, x_cl, x_cl]
            calls = [lambda m=m, i=i: m(i) for m, i in zip(models, inputs, strict=True)]
            times: list[list[float]] = [[] for _ in calls]
            with torch.inference_mode():
                for call in calls:  # warm-up: kernel selection happens on the first call
                    call()
                for r in range(runs):
                    for k in range(len(calls)):
                        j = (k + r) % len(calls)
                        times[j].append(seconds(calls[j]))
            ref = times[0]
            ratios = tuple(statistics.median(t / b for t, b in zip(ts, ref, strict=True)) for ts in times[1:])
            rows.append(InferenceTime(name, batch, folded, statistics.median(ref), ratios))
    return rows


def _channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def report(rows: Sequence[InferenceTime]) -> str:
    """The rows as a table of ratios to the unfused contiguous forward."""
    head = f"{'model':16} {'batch':>5} {'folded':>6} {'unfused':>10} " + " ".join(f"{v:>20}" for v in VARIANTS)
    lines = [head]
    for r in rows:
        lines.append(
            f"{r.name:16} {r.batch:5d} {r.folded:6d} {r.reference_s * 1000:7.1f} ms "
            + " ".join(f"{x:20.2f}" for x in r.ratios)
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=default_models())
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"eval forward at {args.size} px, {args.runs} rounds, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}; ratios to the unfused contiguous model (below 1: faster)"
    )
    print(report(measure(args.models, args.batches, args.runs, args.size)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
