"""Layer normalisation over channels: channels-last (token/NHWC) and channels-first (NCHW) forms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm", "LayerNorm2d"]


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the last dimension (channels-last maps, tokens), eps 1e-6 by default."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (each position normalised on its own), eps 1e-6 by default.

    Its state_dict is a plain LayerNorm's (weight, bias).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
