"""Channel attention: squeeze-and-excitation and efficient channel attention."""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.archs.layers.helpers import make_divisible
from zoo.archs.layers.norm_act import make_act
from zoo.archs.layers.pool import spatial_mean
from zoo.domain.errors import InvalidValueError

__all__ = ["EcaModule", "SEModule", "create_attn"]


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1x1 convolutions (fc1/fc2), an activation (ReLU by default) and a sigmoid gate."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_divisor: int = 8,
        *,
        rd_channels: int | None = None,
        act_layer: str = "relu",
    ) -> None:
        super().__init__()
        # rd_channels, when given, is the squeezed width as is (RegNet sizes it from the block's input)
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.bn = nn.Identity()
        self.act = make_act(act_layer)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = spatial_mean(x)
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
        y = spatial_mean(x).view(x.shape[0], 1, -1)
        y = self.conv(y).sigmoid().view(x.shape[0], -1, 1, 1)
        out: torch.Tensor = x * y
        return out


def create_attn(
    kind: str | None, channels: int, *, rd_ratio: float = 1.0 / 16, act_layer: str = "relu"
) -> nn.Module | None:
    """Channel attention by name: 'se' (squeezed to rd_ratio of channels, act_layer inside), 'eca', or None."""
    if kind is None or kind == "":
        return None
    if kind == "se":
        return SEModule(channels, rd_ratio, act_layer=act_layer)
    if kind == "eca":
        return EcaModule(channels)
    raise InvalidValueError(f"attn_layer={kind!r} is invalid: expected 'se', 'eca' or None")
