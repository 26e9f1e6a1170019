"""zoo.optimize_for_inference against eager float32 and against the by-hand recipe, as ratios in one run.

Usage: python benchmarks/optimize_inference.py [--models NAME ...] [--batches B ...] [--runs N] [--size S]
       [--threads T] [--compile]

Per model and batch size, each round times, in an order rotated every round:
- eager: zoo's model in float32, contiguous, under inference_mode (the baseline);
- reference: timm's model of the same name in float32, where timm is importable (a throwaway install on
  PYTHONPATH; never a dependency), else left out;
- by hand: zoo's model in channels_last under bfloat16 autocast (what a user can do with torch alone);
- optimised: zoo.optimize_for_inference(model) with its automatic choices (its plan is printed).
It prints each variant's speed-up over eager (median of per-round ratios, above 1 is faster), the
optimised copy's speed-up over the by-hand recipe, its top-1 agreement with eager on the batch, and its
GFLOP/s against the device's attainable peak measured in the same run: the best of a square matmul in the
optimised copy's dtype (FLOPs of a forward are counted once with torch's FlopCounterMode).
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch.utils.flop_counter import FlopCounterMode

import zoo
from harness import images, median_ratio, parser, set_threads, timed_rounds

MODELS = (
    "resnet50",
    "convnext_tiny",
    "efficientnet_b0",
    "vit_base_patch16_224",
    "densenet121",
    "mobilenetv3_large_100",
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def peak_gflops(dtype: torch.dtype, n: int = 2048, runs: int = 5) -> float:
    """The device's attainable GFLOP/s in dtype: the best of runs n x n matmuls."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = timed_rounds([lambda: torch.mm(a, b)], runs)[0]
    return 2 * n**3 / min(times) / 1e9


def forward_flops(model: Callable[[torch.Tensor], object], x: torch.Tensor) -> int:
    """The FLOPs of one forward of model on x, as torch counts them."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    return int(counter.get_total_flops())


def _reference(name: str) -> torch.nn.Module | None:
    try:
        import timm  # type: ignore[import-not-found]  # a throwaway install, never a dependency
    except ImportError:
        return None
    torch.manual_seed(0)
    model: torch.nn.Module = timm.create_model(name).eval()
    return model


def _flips(eager: torch.Tensor, got: torch.Tensor) -> str:
    """Where the top class differs: each such image's gap between eager's top two scores, against the largest
    difference between the two outputs (a flip within that difference is a near tie, not a wrong class)."""
    flipped = (eager.argmax(1) != got.argmax(1)).nonzero().flatten().tolist()
    if not flipped:
        return ""
    top2 = eager.topk(2, dim=1).values
    gaps = ", ".join(f"image {i}: top two {float(top2[i, 0] - top2[i, 1]):.3f} apart" for i in flipped)
    return f" ({gaps}; largest output difference {float((eager - got).abs().max()):.3f})"


def _by_hand(model: torch.nn.Module) -> Callable[[torch.Tensor], object]:
    def run(x: torch.Tensor) -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x.contiguous(memory_format=torch.channels_last))

    return run


def measure(name: str, batches: Sequence[int], runs: int, size: int, compile: bool = False) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the guard's figures are printed below
        optimized = zoo.optimize_for_inference(model, example=images(8, size), compile=compile)
    plan = optimized.plan
    print(
        f"{name}: {plan.dtype} ({plan.dtype_reason}), {plan.memory_format}, {plan.folded_norms} norms folded, "
        f"{plan.fused_kernels} fused kernels; "
        f"guard on 8 drawn images: {optimized.accuracy}"
    )
    hand_model = zoo.create_model(name).eval().to(memory_format=torch.channels_last)
    hand_model.load_state_dict(model.state_dict())
    reference = _reference(name)
    peak = peak_gflops(_DTYPES[plan.dtype])
    for batch in batches:
        x = images(batch, size)
        flops = forward_flops(model, x)
        hand = _by_hand(hand_model)
        calls: list[Callable[[], object]] = [partial(model, x), partial(hand, x), partial(optimized, x)]
        labels = ["eager", "by hand", "optimised"]
        if reference is not None:
            calls.append(partial(reference, x))
            labels.append("reference")
        with torch.inference_mode():
            times = timed_rounds(calls, runs)
            eager_out = model(x)
        got = optimized(x)
        assert isinstance(got, torch.Tensor)
        agreement = float((got.argmax(1) == eager_out.argmax(1)).float().mean())
        flips = _flips(eager_out, got)
        speedups = {label: median_ratio(times[0], t) for label, t in zip(labels, times, strict=True)}
        best = statistics.median(times[2])
        gflops = flops / best / 1e9
        print(
            f"  batch {batch}: eager {statistics.median(times[0]) * 1e3:.1f} ms; speed-up over eager: "
            + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items() if k != "eager")
            + f"; optimised over by hand {median_ratio(times[1], times[2]):.2f}x; "
            f"top-1 agreement {agreement:.0%}{flips}; {gflops:.0f} GFLOP/s = {gflops / peak:.0%} of the "
            f"{peak:.0f} GFLOP/s {plan.dtype} matmul peak",
            flush=True,
        )


def main() -> None:
    args_parser = parser(__doc__, threads=0)
    args_parser.add_argument("--models", nargs="+", default=list(MODELS))
    args_parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    args_parser.add_argument("--runs", type=int, default=5)
    args_parser.add_argument("--size", type=int, default=224)
    args_parser.add_argument("--compile", action="store_true", help="optimise with compile=True (torch.compile)")
    args = args_parser.parse_args()
    set_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        measure(name, args.batches, args.runs, args.size, args.compile)


if __name__ == "__main__":
    main()
