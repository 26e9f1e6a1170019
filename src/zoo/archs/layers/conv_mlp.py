"""The two-layer pointwise MLP of convolutional blocks, as linear layers (channels-last) or 1x1 convolutions."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PointwiseMlp"]


class PointwiseMlp(nn.Module):
    """fc1, GELU, fc2 applied at every position: nn.Linear on channels-last input, or 1x1 convs on NCHW (use_conv).

    Parameters live under fc1 and fc2, so checkpoints of either form hold the same names.
    """

    def __init__(self, in_features: int, hidden_features: int, *, use_conv: bool = False) -> None:
        super().__init__()
        self.use_conv = use_conv
        self.fc1: nn.Module = (
            nn.Conv2d(in_features, hidden_features, 1) if use_conv else nn.Linear(in_features, hidden_features)
        )
        self.act = nn.GELU()
        self.fc2: nn.Module = (
            nn.Conv2d(hidden_features, in_features, 1) if use_conv else nn.Linear(hidden_features, in_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out
