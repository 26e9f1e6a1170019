"""MobileNetV4's universal inverted residual: up to three depthwise convs around a pointwise expansion.

Module and parameter names follow timm 1.0.31 (dw_start, pw_exp, dw_mid, se, pw_proj, dw_end, each a conv +
bn [+ aa]; layer_scale.gamma), so the checkpoints published for MobileNetV4 load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.archs.layers.drop import DropPath
from zoo.archs.layers.layer_scale import LayerScale2d
from zoo.archs.layers.norm_act import BatchNormAct2d
from zoo.archs.layers.padding import create_conv2d
from zoo.archs.layers.pool import create_aa

__all__ = ["ConvBnAa", "UniversalInvertedResidual"]


class ConvBnAa(nn.Module):
    """A bias-free conv (`conv`), its batch norm with an optional activation (`bn`), then anti-aliased striding.

    With an aa kind and stride > 1 the conv runs at stride 1 and `aa` downsamples after the norm.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int,
        stride: int = 1,
        *,
        groups: int = 1,
        eps: float,
        act: str,
        apply_act: bool = True,
        same_pad: bool = False,
        aa: str | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        use_aa = bool(aa) and stride > 1
        self.conv = create_conv2d(
            in_chs, out_chs, kernel, 1 if use_aa else stride, dilation, groups=groups, same_pad=same_pad
        )
        self.bn = BatchNormAct2d(out_chs, eps, apply_act=apply_act, act_layer=act)
        self.aa = create_aa(aa, out_chs, stride, enable=use_aa)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.aa(self.bn(self.conv(x)))
        return out


def _groups(group_size: int, chs: int) -> int:
    return 1 if group_size == 0 else chs // group_size


class UniversalInvertedResidual(nn.Module):
    """dw_start (linear), pw_exp (act), dw_mid (act), SE, pw_proj (linear), dw_end (linear), layer scale.

    kernels gives the start, mid and end depthwise kernels, 0 for none (nn.Identity). The stride goes to the
    first of them that exists (mid before end), as the reference places it. Depending on which exist the block
    is an inverted residual (mid), 'ExtraDW' (start and mid), ConvNeXt-like (start) or an FFN (none).
    group_size: channels per group of the depthwise convs (1: depthwise, 0: dense); dilation spaces all three.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernels: tuple[int, int, int],
        stride: int,
        *,
        group_size: int,
        noskip: bool,
        act: str,
        se: nn.Module,
        drop_path_rate: float,
        eps: float,
        same_pad: bool,
        layer_scale: float | None,
        aa: str | None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        start, mid, end = kernels
        self.has_skip = in_chs == out_chs and stride == 1 and not noskip
        self.dw_start: nn.Module = nn.Identity()
        if start:
            self.dw_start = ConvBnAa(
                in_chs, in_chs, start, 1 if mid else stride, groups=_groups(group_size, in_chs),
                eps=eps, act=act, apply_act=False, same_pad=same_pad, aa=aa, dilation=dilation,
            )  # fmt: skip
        self.pw_exp = ConvBnAa(in_chs, mid_chs, 1, eps=eps, act=act, same_pad=same_pad)
        self.dw_mid: nn.Module = nn.Identity()
        if mid:
            self.dw_mid = ConvBnAa(
                mid_chs, mid_chs, mid, stride, groups=_groups(group_size, mid_chs),
                eps=eps, act=act, same_pad=same_pad, aa=aa, dilation=dilation,
            )  # fmt: skip
        self.se = se
        self.pw_proj = ConvBnAa(mid_chs, out_chs, 1, eps=eps, act=act, apply_act=False, same_pad=same_pad)
        self.dw_end: nn.Module = nn.Identity()
        if end:
            # the end conv strides only where neither other does; it never anti-aliases (as the reference)
            self.dw_end = ConvBnAa(
                out_chs, out_chs, end, 1 if start or mid else stride, groups=_groups(group_size, out_chs),
                eps=eps, act=act, apply_act=False, same_pad=same_pad, dilation=dilation,
            )  # fmt: skip
        self.layer_scale: nn.Module = nn.Identity() if layer_scale is None else LayerScale2d(out_chs, layer_scale)
        self.drop_path: nn.Module = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw_exp(self.dw_start(x))
        y = self.pw_proj(self.se(self.dw_mid(y)))
        y = self.layer_scale(self.dw_end(y))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out
