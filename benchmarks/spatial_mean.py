"""zoo's spatial_mean against torch's mean on 16-bit channels_last maps, as ratios in one run.

Usage: python benchmarks/spatial_mean.py [--batch B] [--dtype bfloat16|float16] [--runs N] [--threads T]

The maps are efficientnet_b0's squeeze-excite inputs at 224 px (channels x side): the global means an
optimised copy (zoo.optimize_for_inference, bfloat16 channels_last) takes in every block. For each it prints
the time of x.mean((2, 3), keepdim=True), of spatial_mean(x) (avg_pool2d over the whole map there), their
ratio (median of per-round ratios, above 1: spatial_mean is faster) and the largest difference between the two.
"""

from __future__ import annotations

import statistics
from functools import partial

import torch

from harness import median_ratio, parser, set_threads, timed_rounds
from zoo.archs.layers.pool import spatial_mean

MAPS = ((96, 112), (144, 56), (240, 28), (480, 14), (672, 14), (1152, 7))
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def main() -> None:
    args_parser = parser(__doc__, threads=2)
    args_parser.add_argument("--batch", type=int, default=8)
    args_parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    args_parser.add_argument("--runs", type=int, default=20)
    args = args_parser.parse_args()
    set_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.dtype}")
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for channels, side in MAPS:
            x = torch.randn(args.batch, channels, side, side, generator=gen).to(DTYPES[args.dtype])
            x = x.contiguous(memory_format=torch.channels_last)
            times = timed_rounds([partial(torch.mean, x, (2, 3), keepdim=True), partial(spatial_mean, x)], args.runs)
            diff = float((spatial_mean(x).float() - x.mean((2, 3), keepdim=True).float()).abs().max())
            print(
                f"  {channels:5d} x {side:3d}^2: mean {statistics.median(times[0]) * 1e3:7.3f} ms, spatial_mean "
                f"{statistics.median(times[1]) * 1e3:7.3f} ms, {median_ratio(times[0], times[1]):5.1f}x; "
                f"largest difference {diff:.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
