"""Feature taps: running a network tap by tap, for forward_intermediates and the getter extractor."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from zoo.archs.surface import TapStep, run_intermediates
from zoo.domain.values import FeatureInfo

__all__ = [
    "IntermediatesMixin",
    "sequential_prefix",
    "sequential_steps",
]


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
