"""Normalisation: over channels, LayerNorm and SimpleNorm (scale by the inverse standard deviation, no
centring), each in a channels-last (token/NHWC) and a channels-first (NCHW) form; RmsNorm over tokens; and
plain 2d norms and token norms by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.domain.checks import check_choice
from zoo.domain.errors import InvalidValueError

__all__ = [
    "CHANNEL_NORMS",
    "NORM2D_LAYERS",
    "TOKEN_NORMS",
    "LayerNorm",
    "LayerNorm2d",
    "RmsNorm",
    "SimpleNorm",
    "SimpleNorm2d",
    "channel_norm",
    "make_norm2d",
    "token_norm",
]

# the kinds channel_norm builds, by name
CHANNEL_NORMS: tuple[str, ...] = ("layernorm", "simplenorm")
# plain (activation-free) norms of NCHW maps by name; group norm uses 32 groups
NORM2D_LAYERS: tuple[str, ...] = ("batchnorm", "groupnorm")
# norms over the last (channel) dimension of token sequences by name (transformers)
TOKEN_NORMS: tuple[str, ...] = ("layernorm", "rmsnorm")
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


class _GainNorm(nn.Module):
    """A norm over the last dimension whose only tensor is a per-channel gain, `weight` (starting at ones)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))

    def reset_parameters(self) -> None:
        """weight back to ones."""
        nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


class SimpleNorm(_GainNorm):
    """x / sqrt(var(x) + eps) * weight over the last dimension: LayerNorm without centring or bias.

    The variance is the unbiased one (n - 1 in the denominator), as the published zepto_rms weights were
    trained with. Its state_dict holds `weight` only.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _simple_norm(x, self.weight, self.eps)


class SimpleNorm2d(SimpleNorm):
    """SimpleNorm over the channels of an NCHW map (each position normalised on its own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _simple_norm(x.permute(0, 2, 3, 1), self.weight, self.eps).permute(0, 3, 1, 2)


class RmsNorm(_GainNorm):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension (root-mean-square norm); state_dict: `weight`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, [self.num_channels], self.weight, self.eps)


def token_norm(kind: str, num_channels: int, eps: float = 1e-6) -> nn.LayerNorm | RmsNorm:
    """A norm over the last dimension of tokens by name (one of TOKEN_NORMS): nn.LayerNorm or RmsNorm."""
    check_choice("norm_layer", kind, TOKEN_NORMS)
    if kind == "rmsnorm":
        return RmsNorm(num_channels, eps)
    return nn.LayerNorm(num_channels, eps=eps)


def _simple_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # a function both forms call: TorchScript compiles no super() call
    var = torch.var(x, dim=-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * weight


def channel_norm(kind: str, num_channels: int, eps: float = 1e-6, *, channels_last: bool = False) -> nn.Module:
    """A channel norm by name (one of CHANNEL_NORMS), for NCHW maps or, with channels_last, NHWC maps and tokens."""
    check_choice("norm_layer", kind, CHANNEL_NORMS)
    if kind == "simplenorm":
        return SimpleNorm(num_channels, eps) if channels_last else SimpleNorm2d(num_channels, eps)
    return LayerNorm(num_channels, eps) if channels_last else LayerNorm2d(num_channels, eps)


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
