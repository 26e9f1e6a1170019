"""Layers shared by several architecture families."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.domain.errors import InvalidValueError

POOL_TYPES: tuple[str, ...] = ("avg", "max", "avgmax", "catavgmax", "")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round v to a multiple of divisor, never dropping below round_limit of v."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class GlobalPool(nn.Module):
    """Global spatial pooling by name ('' keeps the map), optionally flattened to [B, C]."""

    def __init__(self, pool_type: str = "avg", flatten: bool = True) -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise InvalidValueError(f"global_pool={pool_type!r} is invalid: expected one of {POOL_TYPES}")
        self.pool_type = pool_type
        self.flatten = flatten and pool_type != ""

    def feat_mult(self) -> int:
        """How many times the input channels the pooled output has."""
        return 2 if self.pool_type == "catavgmax" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            x = x.mean((2, 3), keepdim=True)
        elif self.pool_type == "max":
            x = x.amax((2, 3), keepdim=True)
        elif self.pool_type == "avgmax":
            x = 0.5 * (x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True))
        elif self.pool_type == "catavgmax":
            x = torch.cat((x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)), dim=1)
        return x.flatten(1) if self.flatten else x

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}, flatten={self.flatten}"


def check_head(num_classes: int, global_pool: str) -> None:
    """A linear classifier needs pooled input: refuse num_classes > 0 with global_pool=''."""
    if num_classes < 0:
        raise InvalidValueError(f"num_classes={num_classes} is invalid: expected an int >= 0")
    if global_pool == "" and num_classes > 0:
        raise InvalidValueError(
            f"global_pool='' (no pooling) needs num_classes=0, got num_classes={num_classes}; "
            f"use one of {POOL_TYPES[:-1]} to keep a classifier"
        )


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample: zero a residual branch and rescale the survivors."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Stochastic depth as a module."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1x1 convolutions (fc1/fc2), ReLU and a sigmoid gate."""

    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_divisor: int = 8) -> None:
        super().__init__()
        rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.bn = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.bn(self.fc1(s))))
        out: torch.Tensor = x * s.sigmoid()
        return out


class EcaModule(nn.Module):
    """Efficient channel attention: a 1D convolution across pooled channels, kernel size from width."""

    def __init__(self, channels: int, gamma: int = 2, beta: int = 1) -> None:
        super().__init__()
        t = int(abs(math.log(channels, 2) + beta) / gamma)
        kernel_size = max(t if t % 2 else t + 1, 3)
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.conv(y).sigmoid().view(x.shape[0], -1, 1, 1)
        out: torch.Tensor = x * y
        return out


def create_attn(kind: str | None, channels: int) -> nn.Module | None:
    """Channel attention by name: 'se', 'eca', or None for none."""
    if kind is None or kind == "":
        return None
    if kind == "se":
        return SEModule(channels)
    if kind == "eca":
        return EcaModule(channels)
    raise InvalidValueError(f"attn_layer={kind!r} is invalid: expected 'se', 'eca' or None")


class AvgPool2dSame(nn.Module):
    """2x2 average pooling at stride 1 that keeps the spatial size (pads right/bottom)."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size - 1
        x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return F.avg_pool2d(x, self.kernel_size, stride=1)


def forward_taps(
    x: torch.Tensor, steps: Sequence[Callable[[torch.Tensor], torch.Tensor]], indices: Sequence[int]
) -> list[torch.Tensor]:
    """Apply steps in order (step i ends at tap i), keeping the outputs at indices; stops after the last one."""
    wanted = set(indices)
    out: list[torch.Tensor] = []
    for i, step in enumerate(steps[: max(wanted) + 1]):
        x = step(x)
        if i in wanted:
            out.append(x)
    return out
