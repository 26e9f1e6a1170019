"""TensorFlow-style 'same' padding: convolutions whose padding depends on the input size."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers.helpers import get_padding

__all__ = ["Conv2dSame", "create_conv2d", "pad_same"]


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    """The total 'same' padding of one side length: enough for ceil(size / stride) outputs."""
    reach = (kernel - 1) * dilation + 1
    if reach >= stride:
        # (ceil(size / stride) - 1) * stride + reach - size, written without max() or a branch on size,
        # so torch.export keeps the size symbolic without a guard per layer
        return (-size) % stride + reach - stride
    return max((-(-size // stride) - 1) * stride + reach - size, 0)


def pad_same(x: torch.Tensor, kernel_size: list[int], stride: list[int], dilation: list[int]) -> torch.Tensor:
    """Zero-pad x so a convolution gives ceil(size / stride) outputs, the extra pixel going right/bottom as in TF."""
    pad_h = _same_pad(x.shape[-2], kernel_size[0], stride[0], dilation[0])
    pad_w = _same_pad(x.shape[-1], kernel_size[1], stride[1], dilation[1])
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


# the padding is computed from the input's size: fx records the call instead of tracing into it
torch.fx.wrap("pad_same")


class Conv2dSame(nn.Conv2d):
    """A Conv2d with TF 'same' padding computed per input (built with padding=0; same constructor as Conv2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, list(self.kernel_size), list(self.stride), list(self.dilation))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def create_conv2d(
    in_chs: int,
    out_chs: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    *,
    groups: int = 1,
    bias: bool = False,
    same_pad: bool = False,
) -> nn.Conv2d:
    """A Conv2d padded symmetrically, or with TF 'same' padding (static where the size cannot matter) when same_pad."""
    static = not same_pad or (stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0)
    if static:
        padding = get_padding(kernel_size, stride, dilation)
        return nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation, groups=groups, bias=bias)
    return Conv2dSame(in_chs, out_chs, kernel_size, stride, 0, dilation, groups=groups, bias=bias)
