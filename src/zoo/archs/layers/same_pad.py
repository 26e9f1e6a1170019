"""Size-keeping ('same') stride-1 convolutions, padded asymmetrically where the kernel's reach is odd."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2dSame", "same_conv"]


class Conv2dSame(nn.Conv2d):
    """A stride-1 convolution that pads (k - 1) * dilation in total, the extra pixel right and bottom.

    Its state_dict is a plain Conv2d's.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, dilation: int = 1, *, bias: bool = True) -> None:
        super().__init__(in_chs, out_chs, kernel_size, 1, 0, dilation, bias=bias)
        total = (kernel_size - 1) * dilation
        self.same_pad = [total // 2, total - total // 2, total // 2, total - total // 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written out (not super().forward) so that TorchScript compiles it
        return F.conv2d(F.pad(x, self.same_pad), self.weight, self.bias, 1, 0, self.dilation, self.groups)


def same_conv(in_chs: int, out_chs: int, kernel_size: int, dilation: int = 1, *, bias: bool = True) -> nn.Conv2d:
    """A stride-1 'same' convolution: a plain padded Conv2d when the padding is symmetric, else Conv2dSame."""
    total = (kernel_size - 1) * dilation
    if total % 2 == 0:
        return nn.Conv2d(in_chs, out_chs, kernel_size, 1, total // 2, dilation, bias=bias)
    return Conv2dSame(in_chs, out_chs, kernel_size, dilation, bias=bias)
