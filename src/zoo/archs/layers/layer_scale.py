"""Layer scale: a learned per-channel factor on a residual branch (CaiT, DeiT-III), parameter `gamma`."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LayerScale", "LayerScale2d"]


class LayerScale(nn.Module):
    """x * gamma over the last (channel) dimension, gamma starting at init_values."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), init_values))

    def reset_parameters(self) -> None:
        """Back to init_values (what the weight loader calls for a module a checkpoint does not cover)."""
        with torch.no_grad():
            self.gamma.fill_(self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"init_values={self.init_values}"


class LayerScale2d(LayerScale):
    """x * gamma per channel of an NCHW map (dim 1), gamma starting at init_values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)
