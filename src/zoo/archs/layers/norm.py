"""Normalisation: layer norm over channels (channels-last and NCHW forms), and plain 2d norms by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.domain.errors import InvalidValueError

__all__ = ["NORM2D_LAYERS", "LayerNorm", "LayerNorm2d", "make_norm2d"]

# plain (activation-free) norms of NCHW maps by name; group norm uses 32 groups
NORM2D_LAYERS: tuple[str, ...] = ("batchnorm", "groupnorm")
GROUPS = 32


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


def make_norm2d(kind: str, num_features: int) -> nn.BatchNorm2d | nn.GroupNorm:
    """A plain 2d norm by name: 'batchnorm' (BatchNorm2d) or 'groupnorm' (GroupNorm, 32 groups)."""
    if kind == "batchnorm":
        return nn.BatchNorm2d(num_features)
    if kind == "groupnorm":
        if num_features % GROUPS:
            raise InvalidValueError(
                f"norm_layer='groupnorm' needs a multiple of {GROUPS} channels, got a layer of {num_features}"
            )
        return nn.GroupNorm(GROUPS, num_features)
    raise InvalidValueError(f"norm_layer={kind!r} is invalid: expected one of {NORM2D_LAYERS}")
