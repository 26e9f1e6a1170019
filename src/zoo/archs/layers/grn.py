"""Global response normalisation (ConvNeXt V2): each channel rescaled by its spatial energy relative to the others."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GlobalResponseNorm"]


class GlobalResponseNorm(nn.Module):
    """x + bias + weight * x * n, where n is each channel's L2 norm over the map divided by its mean over channels.

    channels_last: NHWC input (channels on the last dimension), else NCHW. weight and bias start at zero,
    so a fresh layer is the identity; their names are a norm layer's, (C,) each.
    """

    def __init__(self, dim: int, eps: float = 1e-6, *, channels_last: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.channels_last = channels_last
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def reset_parameters(self) -> None:
        """weight and bias back to zero (the identity)."""
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            energy = x.norm(p=2, dim=(1, 2), keepdim=True)
            relative = energy / (energy.mean(dim=-1, keepdim=True) + self.eps)
            shape = (1, 1, 1, -1)
        else:
            energy = x.norm(p=2, dim=(2, 3), keepdim=True)
            relative = energy / (energy.mean(dim=1, keepdim=True) + self.eps)
            shape = (1, -1, 1, 1)
        return x + torch.addcmul(self.bias.view(shape), self.weight.view(shape), x * relative)
