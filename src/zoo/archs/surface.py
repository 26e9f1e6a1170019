"""Shared machinery behind the model surface: tap selection, forward_intermediates and checkpointing.

Architecture families describe their network as a chain of steps (step i ends at feature tap i)
and let these helpers validate requests, run the chain and format the outputs, so every family
answers forward_intermediates, prune_intermediate_layers and set_grad_checkpointing alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TypeVar

import torch
import torch.fx
from torch import nn

# torch.jit re-exports is_scripting at runtime but its stubs do not; TorchScript knows the function itself,
# whatever name it is called by, and compiles `if not is_scripting():` branches out
from torch._jit_internal import is_scripting
from torch.utils.checkpoint import checkpoint

from zoo.domain.checks import check_bool, check_choice
from zoo.domain.features import take_indices
from zoo.domain.values import FeatureInfo

__all__ = [
    "OUTPUT_FORMATS",
    "Intermediates",
    "Step",
    "checkpoint_call",
    "checkpoint_seq",
    "forward_intermediates_by_steps",
    "is_scripting",
    "run_stage",
    "run_steps",
    "take_taps",
    "to_output_fmt",
]

OUTPUT_FORMATS: tuple[str, ...] = ("NCHW", "NHWC")
T = TypeVar("T")

Step = Callable[[torch.Tensor], torch.Tensor]
# forward_intermediates' result: (final features, intermediates), or the intermediates alone
Intermediates = tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]


def take_taps(feature_info: Sequence[FeatureInfo], indices: int | Sequence[int] | None) -> tuple[int, ...]:
    """Tap positions for an `indices` argument: an int n takes the last n taps, a sequence those taps, None all.

    Invalid requests raise InvalidFeatureRequestError naming the valid range and the tap modules.
    """
    return take_indices(feature_info, indices, name="indices", allow_count=True)


def to_output_fmt(x: torch.Tensor, output_fmt: str) -> torch.Tensor:
    """A channels-first map in the requested layout ('NCHW' as is, 'NHWC' permuted)."""
    return x.permute(0, 2, 3, 1) if output_fmt == "NHWC" else x


def run_steps(
    x: torch.Tensor, steps: Sequence[Step], taps: Sequence[int], *, stop_early: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Apply steps in order (step i ends at tap i), keeping the outputs at taps.

    Returns the last step's output and the kept outputs; stop_early ends after the last kept tap.
    """
    wanted = set(taps)
    last = max(wanted) if stop_early else len(steps) - 1
    kept: list[torch.Tensor] = []
    for i, step in enumerate(steps[: last + 1]):
        x = step(x)
        if i in wanted:
            kept.append(x)
    return x, kept


def forward_intermediates_by_steps(
    x: torch.Tensor,
    steps: Sequence[Step],
    feature_info: Sequence[FeatureInfo],
    indices: int | Sequence[int] | None,
    *,
    norm: bool,
    stop_early: bool,
    output_fmt: str,
    intermediates_only: bool,
) -> Intermediates:
    """forward_intermediates for a network that is a chain of steps ending at its feature taps.

    Every argument is checked before anything runs. The final features are the last step's
    output: forward_features' result, or the last requested tap's with stop_early. norm is
    accepted for the common signature; a network whose steps end without a final norm ignores it.
    """
    if len(steps) != len(feature_info):
        raise ValueError(f"{len(steps)} steps for {len(feature_info)} feature taps")  # a family's bug, not a user's
    taps = take_taps(feature_info, indices)
    check_bool("norm", norm)
    check_bool("stop_early", stop_early)
    check_bool("intermediates_only", intermediates_only)
    check_choice("output_fmt", output_fmt, OUTPUT_FORMATS)
    final, kept = run_steps(x, steps, taps, stop_early=stop_early or intermediates_only)
    intermediates = [to_output_fmt(t, output_fmt) for t in kept]
    if intermediates_only:
        return intermediates
    return final, intermediates


def run_stage(stage: nn.Module, x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    """stage(x), under per-block activation checkpointing when asked for and gradients are recorded.

    Checkpointing is skipped where it cannot help or cannot run: without autograd and while
    torch.fx traces the model.
    """
    if checkpointed and torch.is_grad_enabled() and not isinstance(x, torch.fx.Proxy):
        return checkpoint_seq(stage, x)
    out: torch.Tensor = stage(x)
    return out


def checkpoint_seq(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run stage (each block of an nn.Sequential in turn) under non-reentrant activation checkpointing.

    Only each block's input is kept for backward; the block runs again there, with the same random
    state (dropout, stochastic depth), so outputs and gradients are those of a plain run.
    """
    blocks = list(stage) if isinstance(stage, nn.Sequential) else [stage]
    for block in blocks:
        if isinstance(block, nn.Identity):
            continue
        x = checkpoint_call(block, block, x)
    return x


def checkpoint_call(module: nn.Module, fn: Callable[..., T], *args: torch.Tensor) -> T:
    """fn(*args) under non-reentrant activation checkpointing; module's batch-norm statistics update once."""
    out: T = checkpoint(
        fn,
        *args,
        use_reentrant=False,
        context_fn=lambda: (nullcontext(), _norm_stats_kept(module)),
    )
    return out


@contextmanager
def _norm_stats_kept(module: nn.Module) -> Iterator[None]:
    # the recomputation in backward runs the forward a second time: in training mode batch norm would
    # update its running statistics twice, so they are put back as the first (real) forward left them
    # (any module keeping running statistics: batch norm, and norms laid out like it without subclassing it)
    saved = [
        (buf, buf.detach().clone())
        for m in module.modules()
        if m.training
        for name in ("running_mean", "running_var", "num_batches_tracked")
        if isinstance(buf := m._buffers.get(name), torch.Tensor)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
