"""Create and forward times of the DenseNet and Xception families against resnet50, side by side in one run.

Usage: python benchmarks/create_forward.py [--models NAME ...] [--reference NAME] [--runs N] [--batch B]
                                           [--size S] [--threads T]

Each round times, per model in an order rotated every round (so machine drift hits all alike):
- create: zoo.create_model(name) with random weights (architecture and initialisation);
- forward: one eval-mode forward of a (batch, 3, size, size) input under inference_mode.
It prints the medians and each model's median per-round ratio to the reference model (resnet50).
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence

import attrs
import torch

import zoo
from harness import images, median_ratio, parser, rotated, seconds, set_threads

DEFAULT_MODELS = ("densenet121", "xception41")


@attrs.frozen
class CreateForward:
    """One model: parameters, median create and forward seconds, and their median ratios to the reference."""

    name: str
    params: int
    create_s: float
    create_ratio: float
    forward_s: float
    forward_ratio: float


def measure(
    names: Sequence[str], reference: str = "resnet50", runs: int = 7, batch: int = 1, size: int = 224
) -> list[CreateForward]:
    """Create and forward times of reference and names, round by round in a rotating order."""
    names = [reference, *(n for n in names if n != reference)]
    x = images(batch, size)
    models = {name: zoo.create_model(name).eval() for name in names}  # also warms imports and allocators
    create: dict[str, list[float]] = {n: [] for n in names}
    forward: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for model in models.values():
            model(x)  # warm-up: kernel selection happens on the first call
        for r in range(runs):
            for name in rotated(names, r):
                create[name].append(seconds(functools.partial(zoo.create_model, name)))
                forward[name].append(seconds(functools.partial(models[name], x)))

    return [
        CreateForward(
            name=name,
            params=sum(p.numel() for p in models[name].parameters()),
            create_s=statistics.median(create[name]),
            create_ratio=median_ratio(create[name], create[reference]),
            forward_s=statistics.median(forward[name]),
            forward_ratio=median_ratio(forward[name], forward[reference]),
        )
        for name in names
    ]


def report(rows: Sequence[CreateForward]) -> str:
    """The rows as a table."""
    lines = [f"{'model':14} {'params':>8} {'create':>10} {'ratio':>6} {'forward':>10} {'ratio':>6}"]
    for r in rows:
        lines.append(
            f"{r.name:14} {r.params / 1e6:7.1f}M {r.create_s * 1000:7.0f} ms {r.create_ratio:6.2f}"
            f" {r.forward_s * 1000:7.0f} ms {r.forward_ratio:6.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    options.add_argument("--reference", default="resnet50")
    options.add_argument("--runs", type=int, default=7)
    options.add_argument("--batch", type=int, default=1)
    options.add_argument("--size", type=int, default=224)
    args = options.parse_args()
    set_threads(args.threads)
    rows = measure(args.models, args.reference, args.runs, args.batch, args.size)
    print(
        f"input ({args.batch}, 3, {args.size}, {args.size}), {args.runs} rounds, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}; medians, and ratio to {args.reference}"
    )
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
