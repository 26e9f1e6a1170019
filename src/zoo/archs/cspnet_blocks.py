"""CSPNet's configuration values, residual blocks, stages and stem (the model itself is in cspnet.py).

Stage kinds: 'csp' (cross-stage partial: split, blocks on one half, transitions on it and on the
rejoined whole), 'cs3' (the same with one transition, after the rejoin) and 'dark' (a downsampling conv,
then blocks). Block kinds: 'bottle' (ResNe(X)t bottleneck), 'dark' (1x1 then 3x3) and 'edge' (3x3 then
1x1); each may carry squeeze-and-excitation after its first conv (after its 3x3 for 'bottle').
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import nn

from zoo.archs.layers import ConvNormAct, DropPath, create_attn, make_act
from zoo.domain.checks import check_bool, check_choice, check_float, check_int, check_ints
from zoo.domain.errors import InvalidValueError
from zoo.domain.values import FeatureInfo

__all__ = [
    "ATTN_LAYERS",
    "BLOCK_TYPES",
    "STAGE_TYPES",
    "BottleneckBlock",
    "ConvArgs",
    "CrossStage",
    "CrossStage3",
    "DarkBlock",
    "DarkStage",
    "EdgeBlock",
    "StageCfg",
    "StemCfg",
    "make_stage",
    "make_stem",
]

STAGE_TYPES: tuple[str, ...] = ("csp", "cs3", "dark")
BLOCK_TYPES: tuple[str, ...] = ("bottle", "dark", "edge")
ATTN_LAYERS: tuple[str | None, ...] = (None, "se")


@attrs.frozen
class StemCfg:
    """The stem: one conv per width in out_chs, total stride 1, 2 or 4 (4 with a max pool after the convs).

    padding None pads the first conv to keep the size at stride 1; an int (a 6x6 conv's 2: the 'focus'
    stem) sets it.
    """

    out_chs: tuple[int, ...]
    kernel_size: int = 3
    stride: int = 2
    pool: bool = False
    padding: int | None = None

    def __attrs_post_init__(self) -> None:
        chs = check_ints("StemCfg.out_chs", self.out_chs, ge=1)
        if not chs:
            raise InvalidValueError(f"StemCfg.out_chs={self.out_chs!r} is invalid: expected at least one width")
        check_choice("StemCfg.kernel_size", self.kernel_size, (1, 3, 5, 6, 7))
        check_choice("StemCfg.stride", self.stride, (1, 2, 4))
        check_bool("StemCfg.pool", self.pool)
        if self.pool and self.stride != 4:
            raise InvalidValueError(f"StemCfg.pool=True is invalid with stride={self.stride}: expected stride 4")
        if self.padding is not None:
            check_int("StemCfg.padding", self.padding, ge=0)


@attrs.frozen
class StageCfg:
    """One stage: its depth and width, stride, kinds, the cross-stage split's and blocks' ratios, and attention.

    avg_down downsamples with 2x2 average pooling and a 1x1 conv instead of a strided 3x3 conv.
    attn_layer 'se' puts squeeze-and-excitation (squeezed to attn_rd_ratio of its width) in each block.
    """

    depth: int
    out_chs: int
    stride: int = 2
    stage_type: str = "csp"
    block_type: str = "bottle"
    groups: int = 1
    block_ratio: float = 1.0
    bottle_ratio: float = 1.0
    expand_ratio: float = 1.0
    cross_linear: bool = False
    down_growth: bool = False
    avg_down: bool = False
    attn_layer: str | None = None
    attn_rd_ratio: float = 1.0 / 16

    def __attrs_post_init__(self) -> None:
        check_int("StageCfg.depth", self.depth, ge=1)
        check_int("StageCfg.out_chs", self.out_chs, ge=1)
        check_choice("StageCfg.stride", self.stride, (1, 2))
        check_choice("StageCfg.stage_type", self.stage_type, STAGE_TYPES)
        check_choice("StageCfg.block_type", self.block_type, BLOCK_TYPES)
        check_int("StageCfg.groups", self.groups, ge=1)
        for name in ("block_ratio", "bottle_ratio", "expand_ratio", "attn_rd_ratio"):
            ratio = check_float(f"StageCfg.{name}", getattr(self, name), ge=0.0)
            if ratio <= 0.0:
                raise InvalidValueError(f"StageCfg.{name}={ratio!r} is invalid: expected a ratio > 0")
        check_bool("StageCfg.cross_linear", self.cross_linear)
        check_bool("StageCfg.down_growth", self.down_growth)
        check_bool("StageCfg.avg_down", self.avg_down)
        check_choice("StageCfg.attn_layer", self.attn_layer, ATTN_LAYERS)


@attrs.frozen
class ConvArgs:
    """What every conv + norm + act of a model shares: its activation and norm by name."""

    act_layer: str
    norm_layer: str

    def conv(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        apply_act: bool = True,
        padding: int | None = None,
    ) -> ConvNormAct:
        """A ConvNormAct with the model's norm and activation."""
        return ConvNormAct(
            in_chs,
            out_chs,
            kernel_size,
            stride,
            dilation,
            groups=groups,
            apply_act=apply_act,
            act_layer=self.act_layer,
            norm_layer=self.norm_layer,
            padding=padding,
        )

    def attn(self, cfg: StageCfg, channels: int) -> nn.Module:
        """The stage's channel attention at channels wide (with the model's activation inside), or nn.Identity."""
        attn = create_attn(cfg.attn_layer, channels, rd_ratio=cfg.attn_rd_ratio, act_layer=self.act_layer)
        return nn.Identity() if attn is None else attn


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class BottleneckBlock(nn.Module):
    """ResNe(X)t bottleneck: 1x1, grouped 3x3 (then attention), linear 1x1, the residual added, then the activation."""

    def __init__(
        self, cfg: StageCfg, in_chs: int, out_chs: int, dilation: int, drop_path_rate: float, cargs: ConvArgs
    ) -> None:
        super().__init__()
        mid_chs = round(out_chs * cfg.bottle_ratio)
        self.conv1 = cargs.conv(in_chs, mid_chs)
        self.conv2 = cargs.conv(mid_chs, mid_chs, 3, dilation=dilation, groups=cfg.groups)
        self.attn2 = cargs.attn(cfg, mid_chs)
        self.conv3 = cargs.conv(mid_chs, out_chs, apply_act=False)
        self.drop_path = _drop_path(drop_path_rate)
        self.act3 = make_act(cargs.act_layer)

    def zero_init_last(self) -> None:
        """Start the residual branch at zero: its last norm's scale."""
        nn.init.zeros_(self.conv3.bn.get_parameter("weight"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.attn2(self.conv2(self.conv1(x))))
        out = self.drop_path(out) + x
        result: torch.Tensor = self.act3(out)
        return result


class DarkBlock(nn.Module):
    """DarkNet residual block: 1x1 down to the bottleneck (then attention), 3x3 back up, the input added."""

    def __init__(
        self, cfg: StageCfg, in_chs: int, out_chs: int, dilation: int, drop_path_rate: float, cargs: ConvArgs
    ) -> None:
        super().__init__()
        mid_chs = round(out_chs * cfg.bottle_ratio)
        self.conv1 = cargs.conv(in_chs, mid_chs)
        self.attn = cargs.attn(cfg, mid_chs)
        self.conv2 = cargs.conv(mid_chs, out_chs, 3, dilation=dilation, groups=cfg.groups)
        self.drop_path = _drop_path(drop_path_rate)

    def zero_init_last(self) -> None:
        """Start the residual branch at zero: its last norm's scale."""
        nn.init.zeros_(self.conv2.bn.get_parameter("weight"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.attn(self.conv1(x)))
        result: torch.Tensor = self.drop_path(out) + x
        return result


class EdgeBlock(nn.Module):
    """Edge residual (fused-MBConv-like) block: 3x3 to the bottleneck (then attention), 1x1 back, the input added."""

    def __init__(
        self, cfg: StageCfg, in_chs: int, out_chs: int, dilation: int, drop_path_rate: float, cargs: ConvArgs
    ) -> None:
        super().__init__()
        mid_chs = round(out_chs * cfg.bottle_ratio)
        self.conv1 = cargs.conv(in_chs, mid_chs, 3, dilation=dilation, groups=cfg.groups)
        self.attn = cargs.attn(cfg, mid_chs)
        self.conv2 = cargs.conv(mid_chs, out_chs)
        self.drop_path = _drop_path(drop_path_rate)

    def zero_init_last(self) -> None:
        """Start the residual branch at zero: its last norm's scale."""
        nn.init.zeros_(self.conv2.bn.get_parameter("weight"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.attn(self.conv1(x)))
        result: torch.Tensor = self.drop_path(out) + x
        return result


_BLOCKS: dict[str, type[BottleneckBlock | DarkBlock | EdgeBlock]] = {
    "bottle": BottleneckBlock,
    "dark": DarkBlock,
    "edge": EdgeBlock,
}


def _blocks(
    cfg: StageCfg, in_chs: int, dilation: int, rates: Sequence[float], cargs: ConvArgs
) -> tuple[nn.Sequential, int]:
    """A stage's residual blocks (named 0..depth-1) and their output width."""
    block_cls = _BLOCKS[cfg.block_type]
    out_chs = round(cfg.out_chs * cfg.block_ratio)
    blocks = nn.Sequential()
    for i in range(cfg.depth):
        blocks.add_module(str(i), block_cls(cfg, in_chs, out_chs, dilation, rates[i], cargs))
        in_chs = out_chs
    return blocks, out_chs


def _conv_down(
    cfg: StageCfg, in_chs: int, out_chs: int, stride: int, first_dilation: int, cargs: ConvArgs
) -> nn.Module:
    """A stage's downsampling: a strided (or dilated) 3x3 conv, or with avg_down 2x2 average pooling and a 1x1 conv."""
    if not cfg.avg_down:
        return cargs.conv(in_chs, out_chs, 3, stride, first_dilation, cfg.groups)
    # the pool rounds down (a strided 3x3 conv would round up on odd maps), as the published weights were
    # trained; where output_stride turns the stride into dilation there is no pooling, and a 1x1 conv cannot dilate
    pool: nn.Module = nn.AvgPool2d(2) if stride == 2 else nn.Identity()
    return nn.Sequential(pool, cargs.conv(in_chs, out_chs, groups=cfg.groups))


def _cross_down(
    cfg: StageCfg, in_chs: int, stride: int, dilation: int, first_dilation: int, cargs: ConvArgs
) -> tuple[nn.Module, int]:
    """A cross stage's downsampling (Identity where it neither strides nor changes dilation) and its width."""
    if stride == 1 and first_dilation == dilation:
        return nn.Identity(), in_chs
    out_chs = cfg.out_chs if cfg.down_growth else in_chs
    return _conv_down(cfg, in_chs, out_chs, stride, first_dilation, cargs), out_chs


class CrossStage(nn.Module):
    """Cross-stage partial stage: expand, split in two, run the blocks on one half, transition and rejoin."""

    def __init__(
        self,
        cfg: StageCfg,
        in_chs: int,
        stride: int,
        dilation: int,
        first_dilation: int,
        rates: Sequence[float],
        cargs: ConvArgs,
    ) -> None:
        super().__init__()
        self.conv_down, prev_chs = _cross_down(cfg, in_chs, stride, dilation, first_dilation, cargs)
        self.expand_chs = exp_chs = round(cfg.out_chs * cfg.expand_ratio)
        self.conv_exp = cargs.conv(prev_chs, exp_chs, apply_act=not cfg.cross_linear)
        self.blocks, block_chs = _blocks(cfg, exp_chs // 2, dilation, rates, cargs)
        self.conv_transition_b = cargs.conv(block_chs, exp_chs // 2)
        self.conv_transition = cargs.conv(exp_chs, cfg.out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_exp(self.conv_down(x))
        half = self.expand_chs // 2
        cross, part = x[:, :half], x[:, half:]
        part = self.conv_transition_b(self.blocks(part))
        out: torch.Tensor = self.conv_transition(torch.cat([cross, part], dim=1))
        return out


class CrossStage3(nn.Module):
    """CS3 stage: expand, split in two, run the blocks on the first half, rejoin, then one transition conv."""

    def __init__(
        self,
        cfg: StageCfg,
        in_chs: int,
        stride: int,
        dilation: int,
        first_dilation: int,
        rates: Sequence[float],
        cargs: ConvArgs,
    ) -> None:
        super().__init__()
        self.conv_down, prev_chs = _cross_down(cfg, in_chs, stride, dilation, first_dilation, cargs)
        self.expand_chs = exp_chs = round(cfg.out_chs * cfg.expand_ratio)
        self.conv_exp = cargs.conv(prev_chs, exp_chs, apply_act=not cfg.cross_linear)
        self.blocks, block_chs = _blocks(cfg, exp_chs // 2, dilation, rates, cargs)
        if block_chs != exp_chs // 2:
            # the blocks' output rejoins the other half unconverted: it must be as wide
            raise InvalidValueError(
                f"StageCfg.block_ratio={cfg.block_ratio!r} is invalid for a 'cs3' stage with expand_ratio="
                f"{cfg.expand_ratio!r}: its blocks would be {block_chs} wide, expected {exp_chs // 2}"
            )
        self.conv_transition = cargs.conv(exp_chs, cfg.out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_exp(self.conv_down(x))
        half = self.expand_chs // 2
        part, cross = x[:, :half], x[:, half:]
        out: torch.Tensor = self.conv_transition(torch.cat([self.blocks(part), cross], dim=1))
        return out


class DarkStage(nn.Module):
    """DarkNet stage: a downsampling conv (strided 3x3, or pooling and 1x1 with avg_down), then residual blocks."""

    def __init__(
        self,
        cfg: StageCfg,
        in_chs: int,
        stride: int,
        dilation: int,
        first_dilation: int,
        rates: Sequence[float],
        cargs: ConvArgs,
    ) -> None:
        super().__init__()
        self.conv_down = _conv_down(cfg, in_chs, cfg.out_chs, stride, first_dilation, cargs)
        self.blocks, _ = _blocks(cfg, cfg.out_chs, dilation, rates, cargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.blocks(self.conv_down(x))
        return out


_STAGES: dict[str, type[CrossStage | CrossStage3 | DarkStage]] = {
    "csp": CrossStage,
    "cs3": CrossStage3,
    "dark": DarkStage,
}


def make_stage(
    cfg: StageCfg,
    in_chs: int,
    stride: int,
    dilation: int,
    first_dilation: int,
    rates: Sequence[float],
    cargs: ConvArgs,
) -> nn.Module:
    """The stage cfg.stage_type names, at the stride and dilation the model's output_stride leaves it."""
    return _STAGES[cfg.stage_type](cfg, in_chs, stride, dilation, first_dilation, rates, cargs)


def make_stem(in_chans: int, cfg: StemCfg, cargs: ConvArgs) -> tuple[nn.Sequential, list[FeatureInfo], FeatureInfo]:
    """The stem, its taps before its output (a conv before striding on), and its output as a would-be tap."""
    stem = nn.Sequential()
    taps: list[FeatureInfo] = []
    prev: FeatureInfo | None = None
    chs, reduction = in_chans, 1
    last = len(cfg.out_chs) - 1
    for i, out_chs in enumerate(cfg.out_chs):
        # the first conv strides, and the last too where a stride of 4 comes without a pool
        stride = 2 if (i == 0 and cfg.stride > 1) or (i == last and cfg.stride > 2 and not cfg.pool) else 1
        if stride > 1 and prev is not None:
            taps.append(prev)
        padding = cfg.padding if i == 0 else None
        stem.add_module(f"conv{i + 1}", cargs.conv(chs, out_chs, cfg.kernel_size, stride, padding=padding))
        chs, reduction = out_chs, reduction * stride
        prev = FeatureInfo(index=0, module=f"stem.conv{i + 1}", num_chs=chs, reduction=reduction)
    assert prev is not None  # StemCfg holds at least one width
    if cfg.pool:
        taps.append(prev)
        stem.add_module("pool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        reduction *= 2
        prev = FeatureInfo(index=0, module="stem.pool", num_chs=chs, reduction=reduction)
    return stem, taps, prev
