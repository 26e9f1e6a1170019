"""Mixed-kernel convolutions (MixNet's MixConv): the channels split into groups, each convolved with its own kernel.

A MixedConv2d holds its group convolutions as children '0', '1', ... (conv_dw.0.weight, ...), as timm 1.0.31
names them, so the checkpoints published for MixNet load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.archs.layers.padding import create_conv2d

__all__ = ["MixedConv2d", "block_conv", "split_channels"]


def split_channels(chs: int, groups: int) -> list[int]:
    """chs split into groups near-equal parts, the remainder added to the first."""
    split = [chs // groups] * groups
    split[0] += chs - sum(split)
    return split


class MixedConv2d(nn.ModuleList):
    """Convolutions over consecutive channel groups, one kernel size each, their outputs concatenated.

    depthwise: each group convolves its channels separately (groups = its width); else densely.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernels: Sequence[int],
        stride: int = 1,
        *,
        depthwise: bool = False,
        same_pad: bool = False,
        dilation: int = 1,
    ) -> None:
        in_splits = split_channels(in_chs, len(kernels))
        out_splits = split_channels(out_chs, len(kernels))
        super().__init__(
            create_conv2d(ci, co, k, stride, dilation, groups=ci if depthwise else 1, same_pad=same_pad)
            for k, ci, co in zip(kernels, in_splits, out_splits, strict=True)
        )
        self.in_channels = in_chs
        self.out_channels = out_chs
        self.splits = in_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, 1)
        return torch.cat([conv(parts[i]) for i, conv in enumerate(self)], 1)


def block_conv(
    in_chs: int,
    out_chs: int,
    kernels: Sequence[int],
    stride: int = 1,
    *,
    groups: int = 1,
    same_pad: bool = False,
    dilation: int = 1,
) -> nn.Module:
    """One kernel: a (TF 'same' padded where asked) Conv2d; several: a MixedConv2d (groups 1 or depthwise only)."""
    if len(kernels) == 1:
        return create_conv2d(in_chs, out_chs, kernels[0], stride, dilation, groups=groups, same_pad=same_pad)
    depthwise = groups == in_chs > 1
    return MixedConv2d(in_chs, out_chs, kernels, stride, depthwise=depthwise, same_pad=same_pad, dilation=dilation)
