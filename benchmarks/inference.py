"""Eval forward of zoo.fuse_for_inference copies against the models they came from, contiguous and channels_last.

Usage: python benchmarks/inference.py [--models NAME ...] [--batches B ...] [--runs N] [--size S] [--threads T]

Per model and batch size, each round times four forwards under inference_mode, in an order rotated every
round (so that drift in machine load hits all alike): the model as built (contiguous, the reference), its
fused copy, and both again converted to channels_last (weights and input). It prints the reference's median
and each variant's median per-round ratio to it: below 1 is faster.
"""

from __future__ import annotations

import copy
import statistics
import warnings
from collections.abc import Sequence

import attrs
import torch
from torch import nn

import zoo
from create_time import default_models
from harness import images, median_ratio, parser, set_threads, timed_rounds

VARIANTS = ("fused", "channels_last", "fused, channels_last")


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
            x = images(batch, size)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            inputs = [x, x, x_cl, x_cl]
            calls = [lambda m=m, i=i: m(i) for m, i in zip(models, inputs, strict=True)]
            with torch.inference_mode():
                times = timed_rounds(calls, runs)
            ratios = tuple(median_ratio(ts, times[0]) for ts in times[1:])
            rows.append(InferenceTime(name, batch, folded, statistics.median(times[0]), ratios))
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
    options = parser(__doc__)
    options.add_argument("--models", nargs="+", default=default_models())
    options.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    options.add_argument("--runs", type=int, default=7)
    options.add_argument("--size", type=int, default=224)
    args = options.parse_args()
    set_threads(args.threads)
    print(
        f"eval forward at {args.size} px, {args.runs} rounds, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}; ratios to the unfused contiguous model (below 1: faster)"
    )
    print(report(measure(args.models, args.batches, args.runs, args.size)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
