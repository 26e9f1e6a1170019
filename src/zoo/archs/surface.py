"""Shared machinery behind the model surface: tap selection, forward_intermediates' body and checkpointing.

Architecture families describe their network as a chain of steps (step i ends at feature tap i);
ZooModule.forward_intermediates hands them to run_intermediates, which validates the request, runs
the chain and formats the outputs, so every family answers forward_intermediates,
prune_intermediate_layers and set_grad_checkpointing alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
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
    "TapStep",
    "checkpoint_call",
    "checkpoint_seq",
    "is_scripting",
    "run_intermediates",
    "run_stage",
    "take_taps",
    "tap_is_state",
    "to_output_fmt",
]

OUTPUT_FORMATS: tuple[str, ...] = ("NCHW", "NHWC")
T = TypeVar("T")

Step = Callable[[torch.Tensor], torch.Tensor]
# one step per tap: maps the running state (what the next step starts from) to (new state, the tap's output)
TapStep = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
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


def run_intermediates(
    x: torch.Tensor,
    steps: Sequence[TapStep],
    feature_info: Sequence[FeatureInfo],
    indices: int | Sequence[int] | None,
    *,
    norm: bool,
    stop_early: bool,
    output_fmt: str,
    intermediates_only: bool,
    finish: Step | None = None,
    formats: Sequence[str] = OUTPUT_FORMATS,
    format_tap: Callable[[torch.Tensor, str], torch.Tensor] = to_output_fmt,
    finish_every_tap: bool = False,
) -> Intermediates:
    """The one body of forward_intermediates: the taps at indices, and the final features unless taps only.

    steps has one step per tap (see ZooModule._tap_steps). Every argument is checked before anything
    runs. finish maps the last step's state to forward_features' output (what follows the last tap;
    None: nothing); norm applies it to the last tap's output, or to every tap's with finish_every_tap.
    stop_early (implied by intermediates_only) ends after the last wanted tap, whose output is then the
    final features (with finish_every_tap, its state through finish). Tap outputs go through
    format_tap(output, output_fmt), output_fmt being one of formats.
    """
    wanted = take_taps(feature_info, indices)
    check_bool("norm", norm)
    check_bool("stop_early", stop_early)
    check_bool("intermediates_only", intermediates_only)
    check_choice("output_fmt", output_fmt, formats)
    if len(steps) != len(feature_info):
        raise ValueError(f"{len(steps)} steps for {len(feature_info)} feature taps")  # a family's bug, not a user's
    end = finish if finish is not None else _unchanged
    last = len(steps) - 1
    run = steps[: max(wanted) + 1] if stop_early or intermediates_only else steps
    taps: list[torch.Tensor] = []
    tap = x
    for i, step in enumerate(run):
        x, tap = step(x)
        if i not in wanted:
            continue  # (with stop_early, the last step run is a wanted one)
        if norm and (finish_every_tap or i == last):
            tap = end(tap)
        taps.append(format_tap(tap, output_fmt))
    if intermediates_only:
        return taps
    return (tap if stop_early and not finish_every_tap else end(x)), taps


def tap_is_state(step: Step) -> TapStep:
    """A tap step for a step whose output is both the tap's output and what the next step starts from."""
    return partial(_tap_is_state, step)


def _tap_is_state(step: Step, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = step(x)
    return y, y


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    return x


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
