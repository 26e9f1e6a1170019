"""Cost of the list feature extractor over the classifier's own forward_features, on the same weights and input.

Usage: python benchmarks/features_overhead.py [--models NAME ...] [--runs N] [--batch B] [--size S] [--threads T]

Per model, each round times forward_features and three candidates, in an order rotated every round so that
drift in machine load and position in the round hit all alike, and prints the median per-round ratio of each
candidate to forward_features:

- list, all taps: the default extractor (features_only=True), which returns every tap;
- list, last tap: the extractor with out_indices=(-1,), the same work as forward_features: the wrapper's cost;
- getter, all taps: the model's own forward_intermediates, its hand-written way to return every tap.

Target: within 2%. Returning every tap keeps the stride-2 map alive while later stages allocate; on CPU with
glibc's default malloc thresholds that costs fresh pages each call, in the hand-written path as much as in the
extractor (run with MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 to see it vanish).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

import zoo
from harness import images, median_ratio, parser, set_threads, timed_rounds
from zoo.services.features import FeatureFactory

# one model per block/stem/attention variant registered so far (BasicBlock, Bottleneck, deep stem, grouped, SE, ECA)
DEFAULT_MODELS = ("resnet18", "resnet50", "resnet50d", "resnext50_32x4d", "seresnet50", "ecaresnet50d")
COLUMNS = ("list, all taps", "list, last tap", "getter, all taps")


def measure(name: str, runs: int, batch: int, size: int) -> tuple[float, list[float]]:
    """(median forward_features seconds, median per-round ratio of each COLUMNS candidate to it)."""
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    cfg = zoo.api.default_zoo().get_spec(name).feature_cfg
    factory = FeatureFactory()
    # the extractors share the classifier's modules, so all four calls run the same weights
    every = factory.wrap(model, cfg, feature_cls="list")
    last = factory.wrap(model, cfg, out_indices=(-1,), feature_cls="list")
    getter = factory.wrap(model, cfg, feature_cls="getter")
    x = images(batch, size)
    calls: list[Callable[[], object]] = [
        lambda: model.forward_features(x),
        lambda: every(x),
        lambda: last(x),
        lambda: getter(x),
    ]
    with torch.inference_mode():
        times = timed_rounds(calls, runs, warmup=5)  # the allocator takes a few calls to reach its size
    return statistics.median(times[0]), [median_ratio(ts, times[0]) for ts in times[1:]]


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    options.add_argument("--runs", type=int, default=21)
    options.add_argument("--batch", type=int, default=1)
    options.add_argument("--size", type=int, default=224)
    args = options.parse_args()
    set_threads(args.threads)
    print(
        f"input ({args.batch}, 3, {args.size}, {args.size}), {args.runs} rounds, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}; median ratio to forward_features"
    )
    print(f"{'model':18} {'forward_features':>16}" + "".join(f" {c:>15}" for c in COLUMNS))
    worst = [0.0 for _ in COLUMNS]
    for name in args.models:
        base, ratios = measure(name, args.runs, args.batch, args.size)
        worst = [max(w, abs(r - 1.0)) for w, r in zip(worst, ratios, strict=True)]
        print(f"{name:18} {base * 1000:13.1f} ms" + "".join(f" {r:15.3f}" for r in ratios))
    print("largest deviation from 1: " + ", ".join(f"{c} {w * 100:.1f}%" for c, w in zip(COLUMNS, worst, strict=True)))
    print("target: within 2%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
