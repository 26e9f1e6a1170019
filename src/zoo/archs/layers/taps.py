"""Feature taps: running a network tap by tap, for forward_intermediates and the getter extractor."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from zoo.archs.surface import OUTPUT_FORMATS, take_taps, to_output_fmt
from zoo.domain.checks import check_bool, check_choice
from zoo.domain.values import FeatureInfo

__all__ = [
    "IntermediatesMixin",
    "TapStep",
    "run_intermediates",
    "sequential_prefix",
    "sequential_steps",
]

# one step per tap: maps the running state (what the next step starts from) to (new state, the tap's output)
TapStep = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def run_intermediates(
    x: torch.Tensor,
    steps: Sequence[TapStep],
    feature_info: Sequence[FeatureInfo],
    indices: int | Sequence[int] | None,
    *,
    finish: Callable[[torch.Tensor], torch.Tensor],
    norm: bool,
    stop_early: bool,
    output_fmt: str,
    intermediates_only: bool,
) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
    """The shared body of forward_intermediates: taps at indices, and the final output unless taps only.

    finish maps the last step's state to forward_features' output (what follows the last tap); with norm it
    is applied to the last tap as well. Only a taps-only request stops after the last wanted tap: the final
    output needs every stage, so stop_early alone changes nothing.
    """
    wanted = take_taps(feature_info, indices)
    check_bool("norm", norm)
    check_bool("stop_early", stop_early)
    check_bool("intermediates_only", intermediates_only)
    check_choice("output_fmt", output_fmt, OUTPUT_FORMATS)
    last = len(steps) - 1
    early = stop_early or intermediates_only
    run = steps[: max(wanted) + 1] if early else steps
    taps: list[torch.Tensor] = []
    tap = x
    for i, step in enumerate(run):
        x, tap = step(x)
        if norm and i == last:
            tap = finish(tap)
        if i in wanted:
            taps.append(to_output_fmt(tap, output_fmt))
    if intermediates_only:
        return taps
    # with stop_early, the final features are the last requested tap's output (as for every family)
    return (tap if stop_early else finish(x)), taps


def _run_segment(modules: Sequence[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for m in modules:
        x = m(x)
    return x, x


def sequential_prefix(seq: nn.Sequential, n: int) -> nn.Sequential:
    """seq's first n children, under their own names (so checkpoint keys stay the same)."""
    return nn.Sequential(OrderedDict(list(seq.named_children())[:n]))


def sequential_steps(seq: nn.Sequential, tap_names: Sequence[str]) -> list[TapStep]:
    """Tap steps over an nn.Sequential whose children include each tap: step i runs up to child tap_names[i]."""
    children = list(seq.named_children())
    position = {name: i for i, (name, _) in enumerate(children)}
    steps: list[TapStep] = []
    start = 0
    for name in tap_names:
        end = position[name] + 1
        steps.append(functools.partial(_run_segment, [m for _, m in children[start:end]]))
        start = end
    return steps


class IntermediatesMixin:
    """forward_intermediates for a model that lists its tap steps (_tap_steps) and its tail (_finish)."""

    # plain Python values TorchScript need not (and cannot) type: it skips these when scripting the model
    __jit_ignored_attributes__: ClassVar[list[str]] = ["feature_info", "default_cfg", "pretrained_cfg"]
    if TYPE_CHECKING:
        feature_info: list[FeatureInfo]

    def _tap_steps(self) -> list[TapStep]:
        raise NotImplementedError

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """What forward_features applies after the last tap's step (nothing by default)."""
        return x

    def _forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None,
        *,
        norm: bool,
        stop_early: bool,
        output_fmt: str,
        intermediates_only: bool,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """forward_features' output and the taps at indices (int: the last n; None: all), or the taps only.

        Taps are in network order, in output_fmt ('NCHW' or 'NHWC'); stop_early (implied by a taps-only
        request) stops after the last wanted tap; norm applies what follows the last tap in forward_features
        to that tap.
        """
        return run_intermediates(
            x,
            self._tap_steps(),
            self.feature_info,
            indices,
            finish=self._finish,
            norm=norm,
            stop_early=stop_early,
            output_fmt=output_fmt,
            intermediates_only=intermediates_only,
        )
