"""The mobile blocks themselves: depthwise-separable, inverted residual (plain and CondConv), edge residual,
conv-bn-act, and their squeeze-and-excitation gates.

Module and parameter names follow timm 1.0.31 (conv_pw/bn1/conv_dw/bn2/se/conv_pwl/bn3, se.conv_reduce/
conv_expand, ...), so the checkpoints published for those families load unchanged.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

from zoo.archs.layers.block_def import BlockDef
from zoo.archs.layers.block_norms import make_block_norm
from zoo.archs.layers.cond_conv import CondConv2d
from zoo.archs.layers.drop import DropPath
from zoo.archs.layers.global_context import GlobalContext
from zoo.archs.layers.helpers import make_divisible
from zoo.archs.layers.mixed_conv import block_conv
from zoo.archs.layers.norm_act import make_act
from zoo.archs.layers.padding import create_conv2d
from zoo.archs.layers.pool import create_aa, spatial_mean
from zoo.domain.checks import check_choice

__all__ = [
    "GATES",
    "SE_LAYERS",
    "BlockNorm",
    "CondConvResidual",
    "ConvBnAct",
    "DepthwiseSeparable",
    "EdgeResidual",
    "InvertedResidual",
    "SeCfg",
    "SqueezeExcite",
]

GATES: tuple[str, ...] = ("sigmoid", "hard_sigmoid")
SE_LAYERS: tuple[str, ...] = ("se", "gc")


@attrs.frozen
class SeCfg:
    """How a family sizes and gates squeeze-and-excitation.

    from_exp: the reduced width is se_ratio of the expanded width (MobileNetV3) rather than of the block input
    (EfficientNet); round_to: that width is rounded to a multiple of it (0: to the nearest integer); act None
    takes the block's activation; round_limit: how far below the exact width the rounding may go. layer 'gc'
    gates by global context (layers.global_context) instead, its reduced width rounded half up.
    """

    from_exp: bool = False
    round_to: int = 0
    act: str | None = None
    gate: str = attrs.field(default="sigmoid", validator=lambda i, a, v: check_choice("SeCfg.gate", v, GATES))
    layer: str = attrs.field(default="se", validator=lambda i, a, v: check_choice("se_layer", v, SE_LAYERS))
    round_limit: float = 0.9

    def build(self, chs: int, se_ratio: float, exp_ratio: float, block_act: str) -> nn.Module:
        """The gate of a block whose expanded width is chs."""
        if self.layer == "gc":
            ratio = se_ratio if self.from_exp else se_ratio / exp_ratio
            return GlobalContext(chs, max(1, int(chs * ratio + 0.5)), self.act or block_act)
        return SqueezeExcite(chs, self.reduced(chs, se_ratio, exp_ratio), self.act or block_act, self.gate)

    def reduced(self, chs: int, se_ratio: float, exp_ratio: float) -> int:
        """The reduced width of the SE of a block whose expanded width is chs."""
        ratio = se_ratio if self.from_exp else se_ratio / exp_ratio
        if self.round_to:
            return make_divisible(chs * ratio, self.round_to, round_limit=self.round_limit)
        return round(chs * ratio)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: pooled channels through conv_reduce, an activation, conv_expand and a gate."""

    def __init__(self, chs: int, rd_chs: int, act_layer: str, gate: str) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.act1 = make_act(act_layer)  # in place is safe: it acts on a fresh tensor
        self.conv_expand = nn.Conv2d(rd_chs, chs, 1, bias=True)
        self.gate: nn.Module = nn.Hardsigmoid() if gate == "hard_sigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(self.act1(self.conv_reduce(spatial_mean(x))))
        out: torch.Tensor = x * self.gate(s)
        return out


@attrs.frozen
class BlockNorm:
    """Settings every block of a model shares: its norm (kind, eps), whether strided convs pad TF-style, the
    layer scale's initial value of 'uir' and 'mqa' blocks (None: none), and the anti-aliasing kind of strided ones."""

    eps: float
    same_pad: bool
    kind: str = "batchnorm"
    layer_scale: float | None = None
    aa: str | None = None

    def make(self, chs: int, *, act_layer: str = "relu", apply_act: bool = True) -> nn.Module:
        """A norm (+ activation unless apply_act is False) of this kind over chs channels."""
        return make_block_norm(self.kind, chs, self.eps, act_layer=act_layer, apply_act=apply_act)


def _drop(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


def _aa(norm: BlockNorm, chs: int, stride: int) -> tuple[int, nn.Module]:
    # anti-aliased striding: the conv runs at stride 1 and `aa` downsamples after its norm
    if norm.aa and stride > 1:
        return 1, create_aa(norm.aa, chs, stride)
    return stride, nn.Identity()


def _skip(in_chs: int, d: BlockDef) -> bool:
    return d.stride == 1 and in_chs == d.out_chs and not d.noskip


class DepthwiseSeparable(nn.Module):
    """Depthwise conv (bn1 + act), optional SE, pointwise conv (bn2, act if pw_act); residual when shapes allow.

    With d.s2d a 2x2 stride-2 conv (conv_s2d, bn_s2d + act) first folds space into 4x the channels, and the
    depthwise kernel shrinks to (k + 1) // 2, 'same' padded.
    """

    def __init__(
        self, in_chs: int, d: BlockDef, act: str, se: nn.Module, drop_path_rate: float, norm: BlockNorm
    ) -> None:
        super().__init__()
        self.has_skip = _skip(in_chs, d)
        kernels = d.kernel
        self.conv_s2d: nn.Module = nn.Identity()
        self.bn_s2d: nn.Module = nn.Identity()
        same = norm.same_pad
        if d.s2d:
            self.conv_s2d = create_conv2d(in_chs, 4 * in_chs, 2, 2, same_pad=True)
            self.bn_s2d = norm.make(4 * in_chs, act_layer=act)
            in_chs, kernels = 4 * in_chs, tuple((k + 1) // 2 for k in kernels)
            same = same or kernels == (2,)
        stride, self.aa = _aa(norm, in_chs, d.stride)
        self.conv_dw = block_conv(
            in_chs, in_chs, kernels, stride, groups=d.groups(in_chs), same_pad=same, dilation=d.dilation
        )
        self.bn1 = norm.make(in_chs, act_layer=act)
        self.se = se
        self.conv_pw = block_conv(in_chs, d.out_chs, d.pw_kernel, same_pad=norm.same_pad)
        self.bn2 = norm.make(d.out_chs, apply_act=d.pw_act, act_layer=act)
        self.drop_path = _drop(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn_s2d(self.conv_s2d(x))
        y = self.bn2(self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(y))))))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out


class InvertedResidual(nn.Module):
    """Pointwise expansion (bn1 + act), depthwise conv (bn2 + act), optional SE, linear projection (bn3)."""

    def __init__(
        self, in_chs: int, mid_chs: int, d: BlockDef, act: str, se: nn.Module, drop_path_rate: float, norm: BlockNorm
    ) -> None:
        super().__init__()
        self.has_skip = _skip(in_chs, d)
        self.conv_pw = block_conv(in_chs, mid_chs, d.exp_kernel, same_pad=norm.same_pad)
        self.bn1 = norm.make(mid_chs, act_layer=act)
        stride, self.aa = _aa(norm, mid_chs, d.stride)
        self.conv_dw = block_conv(
            mid_chs, mid_chs, d.kernel, stride, groups=d.groups(mid_chs), same_pad=norm.same_pad, dilation=d.dilation
        )
        self.bn2 = norm.make(mid_chs, act_layer=act)
        self.se = se
        self.conv_pwl = block_conv(mid_chs, d.out_chs, d.pw_kernel, same_pad=norm.same_pad)
        self.bn3 = norm.make(d.out_chs, apply_act=False)
        self.drop_path = _drop(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aa(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x)))))
        y = self.bn3(self.conv_pwl(self.se(y)))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out


class CondConvResidual(nn.Module):
    """An inverted residual whose three convs are CondConv2d, mixed per sample by routing_fn over the pooled input."""

    def __init__(
        self, in_chs: int, mid_chs: int, d: BlockDef, act: str, se: nn.Module, drop_path_rate: float, norm: BlockNorm
    ) -> None:
        super().__init__()
        self.has_skip = _skip(in_chs, d)
        e, pad = d.num_experts, norm.same_pad
        self.conv_pw = CondConv2d(in_chs, mid_chs, d.exp_kernel[0], num_experts=e, same_pad=pad)
        self.bn1 = norm.make(mid_chs, act_layer=act)
        stride, self.aa = _aa(norm, mid_chs, d.stride)
        self.conv_dw = CondConv2d(
            mid_chs, mid_chs, d.kernel[0], stride, groups=d.groups(mid_chs), num_experts=e, same_pad=pad,
            dilation=d.dilation,
        )  # fmt: skip
        self.bn2 = norm.make(mid_chs, act_layer=act)
        self.se = se
        self.conv_pwl = CondConv2d(mid_chs, d.out_chs, d.pw_kernel[0], num_experts=e, same_pad=pad)
        self.bn3 = norm.make(d.out_chs, apply_act=False)
        self.drop_path = _drop(drop_path_rate)
        self.routing_fn = nn.Linear(in_chs, e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = torch.sigmoid(self.routing_fn(x.mean((2, 3))))
        y = self.aa(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x, routing)), routing)))
        y = self.bn3(self.conv_pwl(self.se(y), routing))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out


class EdgeResidual(nn.Module):
    """Fused MBConv: a full (strided) conv expands (bn1 + act), optional SE, linear projection (bn2)."""

    def __init__(
        self, in_chs: int, mid_chs: int, d: BlockDef, act: str, se: nn.Module, drop_path_rate: float, norm: BlockNorm
    ) -> None:
        super().__init__()
        self.has_skip = _skip(in_chs, d)
        groups = d.groups(mid_chs)  # grouped by the expanded width, as the reference does
        stride, self.aa = _aa(norm, mid_chs, d.stride)
        self.conv_exp = block_conv(
            in_chs, mid_chs, d.kernel, stride, groups=groups, same_pad=norm.same_pad, dilation=d.dilation
        )
        self.bn1 = norm.make(mid_chs, act_layer=act)
        self.se = se
        self.conv_pwl = block_conv(mid_chs, d.out_chs, d.pw_kernel, same_pad=norm.same_pad)
        self.bn2 = norm.make(d.out_chs, apply_act=False)
        self.drop_path = _drop(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pwl(self.se(self.aa(self.bn1(self.conv_exp(x))))))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out


class ConvBnAct(nn.Module):
    """A plain conv (`conv`) with bn1 + act; a residual only where the def asks (skip) and shapes allow."""

    def __init__(self, in_chs: int, d: BlockDef, act: str, drop_path_rate: float, norm: BlockNorm) -> None:
        super().__init__()
        self.has_skip = d.skip and d.stride == 1 and in_chs == d.out_chs
        stride, self.aa = _aa(norm, d.out_chs, d.stride)
        self.conv = create_conv2d(
            in_chs, d.out_chs, d.kernel[0], stride, d.dilation, groups=d.groups(in_chs), same_pad=norm.same_pad
        )
        self.bn1 = norm.make(d.out_chs, act_layer=act)
        self.drop_path = _drop(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aa(self.bn1(self.conv(x)))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out
