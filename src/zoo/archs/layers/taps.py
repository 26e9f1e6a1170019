"""Feature taps: tap steps over an nn.Sequential (for ZooModule._tap_steps), and cutting one short."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from zoo.archs.surface import TapStep

__all__ = ["sequential_prefix", "sequential_steps"]


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
