"""The transformer MLP: two linear layers around an activation, with dropout (parameters under fc1/fc2)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Mlp"]


class Mlp(nn.Module):
    """fc1, GELU, dropout, fc2, dropout: the feed-forward half of a transformer block."""

    def __init__(self, in_features: int, hidden_features: int, *, bias: bool = True, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
        return out
