"""What Pruner.derive saves: parameters, multiply-adds and forward time of a model pruned by channel magnitude.

Usage: python benchmarks/prune_derive.py [--model NAME] [--ratios R ...] [--runs N] [--batch B] [--size S]
                                         [--threads T] [--device cpu|cuda]

Derives one pruned copy per ratio (ratio 0 is the original layout, sliced and rebuilt: the reference run),
then times every copy's forward in rounds whose order rotates every round, so that drift in machine load
hits all alike, and prints per ratio: parameters, MACs per image, median forward time, and the median
per-round ratio of that time to the ratio-0 copy's in the same round.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

import zoo
from harness import images, median_ratio, parser, rotated, set_threads
from zoo.services.pruner import ChannelPruner, count_flops


def timed(model: nn.Module, x: torch.Tensor) -> float:
    """Wall time of one forward (synchronised on CUDA)."""
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print one row per ratio."""
    options = parser(__doc__, threads=0)
    options.add_argument("--model", default="resnet50")
    options.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    options.add_argument("--runs", type=int, default=20)
    options.add_argument("--batch", type=int, default=8)
    options.add_argument("--size", type=int, default=224)
    options.add_argument("--device", default="cpu")
    args = options.parse_args()
    set_threads(args.threads)
    ratios = sorted({0.0, *args.ratios})
    torch.manual_seed(0)
    base = zoo.create_model(args.model).eval()
    pruner = ChannelPruner()
    models: list[nn.Module] = []
    for r in ratios:
        start = time.perf_counter()
        _, pruned = pruner.derive(base, r)
        print(f"derived ratio {r}: {time.perf_counter() - start:.1f} s")
        models.append(pruned.eval().to(args.device))
    x = images(args.batch, args.size).to(args.device)
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for m in models:
            m(x)  # warm-up
        for round_idx in range(args.runs):
            for i in rotated(range(len(models)), round_idx):
                times[i].append(timed(models[i], x))
    print(
        f"{args.model}, batch {args.batch} x 3 x {args.size} x {args.size}, {args.device}, "
        f"{torch.get_num_threads()} threads, {args.runs} rounds"
    )
    print(f"{'ratio':>6} {'params':>12} {'params/orig':>11} {'GMACs/img':>10} {'ms (median)':>12} {'time/orig':>10}")
    p0 = sum(p.numel() for p in models[0].parameters())
    for r, m, t in zip(ratios, models, times, strict=True):
        params = sum(p.numel() for p in m.parameters())
        macs = count_flops(m.cpu(), args.size) / 1e9
        print(
            f"{r:>6.2f} {params:>12,} {params / p0:>11.3f} {macs:>10.2f} "
            f"{statistics.median(t) * 1000:>12.1f} {median_ratio(t, times[0]):>10.3f}"
        )


if __name__ == "__main__":
    main()
