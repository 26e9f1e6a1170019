"""RegNet's design rule and its own blocks: the quantised-linear stage layout, the post- and pre-activation
bottlenecks, their shortcuts and stages.

Module and parameter names follow timm 1.0.31's RegNet, so published checkpoints load unchanged.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import attrs
import torch
from torch import nn

from zoo.archs.layers import (
    AvgPool2dSame,
    BatchNormAct2d,
    ConvNormAct,
    DropPath,
    SEModule,
    get_padding,
    make_act,
    make_divisible,
)
from zoo.domain.checks import check_bool, check_choice, check_float, check_int
from zoo.domain.errors import InvalidValueError

__all__ = [
    "ACT_LAYERS",
    "DOWNSAMPLE_TYPES",
    "Bottleneck",
    "PreBottleneck",
    "RegNetCfg",
    "StageLayout",
    "make_stage",
    "stage_layouts",
]

DOWNSAMPLE_TYPES: tuple[str | None, ...] = ("conv1x1", "avg", None)
# the activations RegNet designs use: ReLU (X, Y) and SiLU (the pre-activation V and the Z designs)
ACT_LAYERS: tuple[str, ...] = ("relu", "silu")
WIDTH_QUANTUM = 8


@attrs.frozen
class RegNetCfg:
    """A RegNet design: per-block widths w0 + wa * j, snapped to powers of wm and multiples of 8, grouped into stages.

    group_size is the width of each group of the 3x3 convolution; bottle_ratio the width of the block's
    inner convolutions relative to its output (above 1 for the inverted bottlenecks of RegNet-Z);
    se_ratio (0: none) sizes the squeeze-excitation from the block's input width; downsample is the
    projection shortcut's kind ('conv1x1', 'avg' for pooling then 1x1, None for no shortcut where the
    shape changes); linear_out drops each block's final activation (then one activation ends the
    network); preact builds pre-activation blocks (norm and activation before each convolution, a bare
    convolution as stem; RegNet-V); num_features (0: none) adds a final 1x1 conv + norm + activation to
    that width; act_layer is every activation's kind, 'relu' or 'silu'.
    """

    depth: int
    w0: int
    wa: float
    wm: float
    group_size: int
    bottle_ratio: float = 1.0
    se_ratio: float = 0.0
    group_min_ratio: float = 0.0
    stem_width: int = 32
    downsample: str | None = "conv1x1"
    linear_out: bool = False
    preact: bool = False
    num_features: int = 0
    act_layer: str = "relu"

    def __attrs_post_init__(self) -> None:
        check_int("RegNetCfg.depth", self.depth, ge=1)
        check_int("RegNetCfg.w0", self.w0, ge=WIDTH_QUANTUM)
        if self.w0 % WIDTH_QUANTUM:
            raise InvalidValueError(f"RegNetCfg.w0={self.w0!r} is invalid: expected a multiple of {WIDTH_QUANTUM}")
        check_float("RegNetCfg.wa", self.wa, ge=0.0)
        wm = check_float("RegNetCfg.wm", self.wm)
        if wm <= 1.0:
            raise InvalidValueError(f"RegNetCfg.wm={self.wm!r} is invalid: expected a number above 1")
        check_int("RegNetCfg.group_size", self.group_size, ge=1)
        ratio = check_float("RegNetCfg.bottle_ratio", self.bottle_ratio, le=8.0)
        if ratio <= 0.0:
            raise InvalidValueError(f"RegNetCfg.bottle_ratio={self.bottle_ratio!r} is invalid: expected 0 < ratio <= 8")
        check_float("RegNetCfg.se_ratio", self.se_ratio, ge=0.0, lt=1.0)
        check_float("RegNetCfg.group_min_ratio", self.group_min_ratio, ge=0.0, lt=1.0)
        check_int("RegNetCfg.stem_width", self.stem_width, ge=1)
        check_choice("RegNetCfg.downsample", self.downsample, DOWNSAMPLE_TYPES)
        check_bool("RegNetCfg.linear_out", self.linear_out)
        check_bool("RegNetCfg.preact", self.preact)
        check_int("RegNetCfg.num_features", self.num_features, ge=0)
        check_choice("RegNetCfg.act_layer", self.act_layer, ACT_LAYERS)


@attrs.frozen
class StageLayout:
    """One stage as the design rule lays it out: output width, number of blocks, 3x3 group width."""

    width: int
    depth: int
    group_size: int


def stage_layouts(cfg: RegNetCfg) -> list[StageLayout]:
    """The stages of cfg's design: block widths quantised, equal widths merged, widths made divisible by groups."""
    # in float32 on the CPU on purpose (also under a meta-device build): the published widths were derived so
    linear = torch.arange(cfg.depth, dtype=torch.float32, device="cpu") * cfg.wa + cfg.w0
    steps = torch.round(torch.log(linear / cfg.w0) / math.log(cfg.wm))
    block_widths = torch.round(cfg.w0 * torch.pow(cfg.wm, steps) / WIDTH_QUANTUM) * WIDTH_QUANTUM
    widths, depths = torch.unique(block_widths.int(), return_counts=True)
    layouts = []
    for width, depth in zip(widths.tolist(), depths.tolist(), strict=True):
        bottleneck = int(width * cfg.bottle_ratio)
        group = min(cfg.group_size, bottleneck)
        if cfg.group_min_ratio:
            bottleneck = make_divisible(bottleneck, group, round_limit=cfg.group_min_ratio)
        else:
            bottleneck = int(round(bottleneck / group) * group)
        layouts.append(StageLayout(int(bottleneck / cfg.bottle_ratio), depth, group))
    return layouts


def _conv(
    in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1, groups: int = 1
) -> nn.Conv2d:
    """A bias-free convolution padded to keep a stride-1 size: the pre-activation design's bare convolution."""
    padding = get_padding(kernel_size, stride, dilation)
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation, groups=groups, bias=False)


def _shortcut(
    kind: str | None, in_chs: int, out_chs: int, stride: int, dilation: tuple[int, int], *, preact: bool
) -> nn.Module | None:
    """The residual path: Identity where shapes match, else a projection of the given kind (None: no residual).

    A pre-activation block projects with a bare 1x1 convolution (its input is normalised already).
    """
    if in_chs == out_chs and stride == 1 and dilation[0] == dilation[1]:
        return nn.Identity()
    if kind is None:
        return None
    if kind == "avg":
        pool: nn.Module = nn.Identity()
        if stride > 1:
            pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        elif dilation[0] > 1:
            pool = AvgPool2dSame(2)
        proj = _conv(in_chs, out_chs, 1) if preact else ConvNormAct(in_chs, out_chs, 1, apply_act=False)
        return nn.Sequential(pool, proj)
    if preact:
        return _conv(in_chs, out_chs, 1, stride)
    return ConvNormAct(in_chs, out_chs, 1, stride, apply_act=False)


def _se(mid: int, in_chs: int, cfg: RegNetCfg) -> nn.Module:
    # squeezed from the block's input width, not the bottleneck's
    return (
        SEModule(mid, rd_channels=round(in_chs * cfg.se_ratio), act_layer=cfg.act_layer)
        if cfg.se_ratio
        else nn.Identity()
    )


class Bottleneck(nn.Module):
    """1x1, grouped 3x3 (strided), squeeze-excitation (Y, Z), 1x1 without activation; residual, then activation."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int,
        dilation: tuple[int, int],
        group_size: int,
        cfg: RegNetCfg,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        mid = round(out_chs * cfg.bottle_ratio)
        act = cfg.act_layer
        self.conv1 = ConvNormAct(in_chs, mid, 1, act_layer=act)
        self.conv2 = ConvNormAct(mid, mid, 3, stride, dilation[0], groups=mid // group_size, act_layer=act)
        self.se = _se(mid, in_chs, cfg)
        self.conv3 = ConvNormAct(mid, out_chs, 1, apply_act=False)
        self.act3: nn.Module = nn.Identity() if cfg.linear_out else make_act(act, inplace=False)
        # named downsample for checkpoint compatibility, though it is the shortcut (Identity where shapes match)
        self.downsample = _shortcut(cfg.downsample, in_chs, out_chs, stride, dilation, preact=False)
        self.drop_path: nn.Module = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Start the residual branch at zero: its last batch norm's scale."""
        nn.init.zeros_(self.conv3.bn.get_parameter("weight"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv3(self.se(self.conv2(self.conv1(x))))
        downsample = self.downsample
        if downsample is not None:
            x = self.drop_path(x) + downsample(shortcut)
        out: torch.Tensor = self.act3(x)
        return out


class PreBottleneck(nn.Module):
    """The pre-activation bottleneck (RegNet-V): norm + activation before each of the 1x1, grouped 3x3 and 1x1
    convolutions, squeeze-excitation after the 3x3; the shortcut starts from the first norm's output and the
    sum is returned as is (no activation after it, whatever linear_out says)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int,
        dilation: tuple[int, int],
        group_size: int,
        cfg: RegNetCfg,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        mid = round(out_chs * cfg.bottle_ratio)
        act = cfg.act_layer
        self.norm1 = BatchNormAct2d(in_chs, act_layer=act)
        self.conv1 = _conv(in_chs, mid, 1)
        self.norm2 = BatchNormAct2d(mid, act_layer=act)
        self.conv2 = _conv(mid, mid, 3, stride, dilation[0], groups=mid // group_size)
        self.se = _se(mid, in_chs, cfg)
        self.norm3 = BatchNormAct2d(mid, act_layer=act)
        self.conv3 = _conv(mid, out_chs, 1)
        self.downsample = _shortcut(cfg.downsample, in_chs, out_chs, stride, dilation, preact=True)
        self.drop_path: nn.Module = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        shortcut = x
        x = self.conv2(self.norm2(self.conv1(x)))
        x = self.conv3(self.norm3(self.se(x)))
        downsample = self.downsample
        if downsample is not None:
            x = self.drop_path(x) + downsample(shortcut)
        return x


def make_stage(
    in_chs: int,
    layout: StageLayout,
    stride: int,
    dilation: int,
    rates: Sequence[float],
    cfg: RegNetCfg,
) -> nn.Sequential:
    """A stage's blocks b1..bN; the first strides (or starts the dilation) and changes the width."""
    block = PreBottleneck if cfg.preact else Bottleneck
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    first_dilation = 1 if dilation in (1, 2) else 2
    for i in range(layout.depth):
        blocks[f"b{i + 1}"] = block(
            in_chs if i == 0 else layout.width,
            layout.width,
            stride=stride if i == 0 else 1,
            dilation=(first_dilation, dilation),
            group_size=layout.group_size,
            cfg=cfg,
            drop_path_rate=rates[i],
        )
        first_dilation = dilation
    return nn.Sequential(blocks)
