"""Every figure zoo tracks, as ratios against a reference measured side by side, in one run (`make bench`).

Usage: python benchmarks/all.py [--models NAME ...] [--runs N] [--threads T] [--quick]

Sections, each from its own benchmark module (run one alone for more rounds and options):
- import         import_time.py: `import zoo; zoo.list_models()` over `import torch`, fresh interpreters
- create         create_time.py: create_model (one-pass init) over the constructor with default init first
- pretrained     pretrained_load.py: create_model(pretrained=True) to the first output, and its peak RSS growth,
                 over create_model + load_state_dict (both in fresh subprocesses)
- forward        create_forward.py: each model's create and eval forward time over resnet50's
- features       features_overhead.py: the features_only extractors over forward_features
- inference      inference.py: fuse_for_inference and channels_last over the model as built, batch 1 and 8
--models defaults to resnet50 and one model of every registered family.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch

import create_forward
import create_time
import features_overhead
import import_time
import inference
import pretrained_load
from harness import parser, set_threads


def section(title: str, body: Callable[[], str]) -> None:
    """Print a section's table with its title and the seconds it took to measure."""
    start = time.perf_counter()
    text = body()
    print(f"\n## {title} ({time.perf_counter() - start:.0f} s)\n{text}", flush=True)


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--models", nargs="+", default=create_time.default_models())
    options.add_argument("--runs", type=int, default=7, help="rounds per in-process figure (default 7)")
    options.add_argument("--quick", action="store_true", help="3 rounds, fewer subprocesses: a smoke run")
    args = options.parse_args()
    set_threads(args.threads)
    runs = 3 if args.quick else args.runs
    reference = args.models[0]
    print(
        f"zoo benchmarks: torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.machine()}, {runs} rounds; every figure is a median, ratios are per-round medians"
    )

    def imports() -> str:
        base, cand = import_time.measure(5 if args.quick else 15)
        return (
            f"import torch {base:.3f} s; + import zoo, list_models() {cand:.3f} s: "
            f"zoo's own cost {cand - base:+.3f} s (target < 0.150 s), ratio {cand / base:.2f}"
        )

    def pretrained() -> str:
        rows = pretrained_load.measure([reference], (224,), 1 if args.quick else 3, args.threads)
        return "\n".join(
            f"{r.name}: time to first output {r.pretrained_s:.3f} s vs {r.init_load_s:.3f} s create+load: "
            f"ratio {r.ratio:.2f} (target <= 0.3), {r.ratio_less_forward:.2f} less the forward; "
            f"peak RSS growth {r.pretrained_rss:.2f}x the checkpoint (target <= 1.3) vs {r.init_load_rss:.2f}x"
            for r in rows
        )

    def features() -> str:
        base, ratios = features_overhead.measure(reference, runs, 1, 224)
        cols = ", ".join(f"{c} {r:.3f}" for c, r in zip(features_overhead.COLUMNS, ratios, strict=True))
        return f"{reference}: forward_features {base * 1000:.1f} ms; ratios {cols} (target within 2%)"

    section("import", imports)
    section(
        "create: one-pass init / default init first (target <= 0.6)",
        lambda: create_time.report(create_time.measure_threads(args.models, runs, create_time.thread_counts())),
    )
    section("pretrained", pretrained)
    section(
        f"forward: create and eval forward, ratio to {reference}",
        lambda: create_forward.report(create_forward.measure(args.models[1:], reference, runs)),
    )
    section("features overhead", features)
    section(
        "fused inference: ratio to the model as built (below 1: faster)",
        lambda: inference.report(inference.measure(args.models, (1, 8), runs)),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
