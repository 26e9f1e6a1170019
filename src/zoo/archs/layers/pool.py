"""Pooling: global pooling by name, size-keeping average pooling, anti-aliased (blur) pooling."""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch._jit_internal import is_scripting

from zoo.archs.layers.helpers import get_padding
from zoo.domain.checks import check_choice, check_int
from zoo.domain.errors import InvalidValueError

__all__ = ["AA_LAYERS", "POOL_TYPES", "AvgPool2dSame", "BlurPool2d", "GlobalPool", "create_aa", "spatial_mean"]

POOL_TYPES: tuple[str, ...] = ("avg", "max", "avgmax", "catavgmax", "")
_HALF = (torch.bfloat16, torch.float16)
_NHWC = torch.channels_last
# anti-aliased downsampling by name: average pooling, or a binomial blur (BlurPool2d)
AA_LAYERS: tuple[str, ...] = ("avg", "blur", "avg_floor", "blurpc")


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of an NCHW tensor over H and W, kept as 1 x 1.

    A bfloat16 or float16 tensor in channels_last is averaged by avg_pool2d over the whole map: torch's mean
    reduces those 2-20x slower (python benchmarks/spatial_mean.py: efficientnet_b0's squeeze-excite maps at
    batch 8 in bfloat16 on 2 cores, 96 x 112 x 112 in 9.3 ms against 0.43 ms), with the same result there.
    Any other tensor, and every traced or scripted graph, takes mean: the reduction published checkpoints
    were checked with, and one op whatever the input's size and dtype.
    """
    # TorchScript drops only a bare `if not is_scripting()` branch, hence the nested if
    if not is_scripting():  # noqa: SIM102
        if not isinstance(x, torch.fx.Proxy) and x.dtype in _HALF and x.is_contiguous(memory_format=_NHWC):
            return F.avg_pool2d(x, (x.shape[2], x.shape[3]))
    return x.mean((2, 3), keepdim=True)


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
            x = spatial_mean(x)
        elif self.pool_type == "max":
            x = x.amax((2, 3), keepdim=True)
        elif self.pool_type == "avgmax":
            x = 0.5 * (spatial_mean(x) + x.amax((2, 3), keepdim=True))
        elif self.pool_type == "catavgmax":
            x = torch.cat((spatial_mean(x), x.amax((2, 3), keepdim=True)), dim=1)
        return x.flatten(1) if self.flatten else x

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}, flatten={self.flatten}"


class AvgPool2dSame(nn.Module):
    """2x2 average pooling at stride 1 that keeps the spatial size (pads right/bottom)."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size - 1
        x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return F.avg_pool2d(x, self.kernel_size, stride=1)


class BlurPool2d(nn.Module):
    """Anti-aliased downsampling: a fixed binomial low-pass filter per channel, then striding.

    The filter is a non-persistent buffer, so checkpoints carry no key for it.
    """

    def __init__(self, channels: int, filt_size: int = 3, stride: int = 2, pad_mode: str = "reflect") -> None:
        super().__init__()
        check_choice("pad_mode", pad_mode, ("reflect", "constant"))
        self.pad_mode = pad_mode
        self.channels = check_int("channels", channels, ge=1)
        self.filt_size = check_int("filt_size", filt_size, ge=2)
        self.stride = check_int("stride", stride, ge=1)
        pad = get_padding(filt_size, stride)
        self.padding = [pad, pad, pad, pad]
        # binomial coefficients: the rows of Pascal's triangle, normalised to sum to one
        coeffs = torch.tensor([math.comb(filt_size - 1, k) for k in range(filt_size)], dtype=torch.float32)
        coeffs = coeffs / coeffs.sum()
        kernel = (coeffs[:, None] * coeffs[None, :])[None, None].repeat(channels, 1, 1, 1)
        self.filt: torch.Tensor
        self.register_buffer("filt", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.padding, mode=self.pad_mode)
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, filt_size={self.filt_size}, stride={self.stride}"


def create_aa(kind: str | None, channels: int, stride: int = 2, *, enable: bool = True) -> nn.Module:
    """Anti-aliased downsampling by name ('avg': stride x stride average pooling, 'blur': BlurPool2d).

    'avg_floor' pools rounding down and 'blurpc' blurs a zero-padded map (MobileNetV4's, as published).

    None, '' or enable=False give nn.Identity: the block keeps its stride in its convolution then.
    Average pooling rounds up (ceil_mode), as a strided conv or a ceil-mode shortcut pool does, so an odd
    map keeps its shortcut's size; on even maps that is plain stride x stride pooling.
    """
    if not kind or not enable:
        return nn.Identity()
    if kind == "avg":
        return nn.AvgPool2d(stride, ceil_mode=True)
    if kind == "avg_floor":
        return nn.AvgPool2d(stride)
    if kind in ("blur", "blurpc"):
        return BlurPool2d(channels, stride=stride, pad_mode="constant" if kind == "blurpc" else "reflect")
    raise InvalidValueError(f"aa_layer={kind!r} is invalid: expected one of {AA_LAYERS} or None")
