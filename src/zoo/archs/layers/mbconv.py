"""Mobile inverted-bottleneck blocks (EfficientNet, MobileNetV3): their typed definitions and the stage builder.

Module and parameter names follow timm 1.0.31 (conv_pw/bn1/conv_dw/bn2/se/conv_pwl/bn3, se.conv_reduce/
conv_expand), so the checkpoints published for those families load unchanged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import attrs
import torch
from torch import nn

from zoo.archs.layers.drop import DropPath
from zoo.archs.layers.helpers import make_divisible
from zoo.archs.layers.norm_act import ACT_LAYERS, BatchNormAct2d, make_act
from zoo.archs.layers.padding import create_conv2d
from zoo.archs.surface import TapStep, run_stage
from zoo.domain.checks import check_bool, check_choice, check_float, check_int
from zoo.domain.errors import InvalidValueError
from zoo.domain.values import FeatureInfo

__all__ = [
    "BLOCK_KINDS",
    "GATES",
    "BlockDef",
    "ConvBnAct",
    "DepthwiseSeparable",
    "InvertedResidual",
    "MbBody",
    "MbStages",
    "SeCfg",
    "SqueezeExcite",
    "build_body",
    "build_stages",
    "check_stages",
    "google_init_",
    "scale_repeats",
    "scale_width",
    "stage_steps",
]

BLOCK_KINDS: tuple[str, ...] = ("ds", "ir", "cn")
GATES: tuple[str, ...] = ("sigmoid", "hard_sigmoid")


def _opt_act(inst: object, a: attrs.Attribute[str | None], v: str | None) -> None:
    if v is not None:
        check_choice(f"BlockDef.{a.name}", v, ACT_LAYERS)


@attrs.frozen
class BlockDef:
    """One run of identical blocks: kind ('ds' depthwise-separable, 'ir' inverted residual, 'cn' conv-bn-act).

    The first block of the run strides; act None takes the model's activation; se_ratio 0 means no
    squeeze-and-excitation.
    """

    kind: str = attrs.field(validator=lambda i, a, v: check_choice("BlockDef.kind", v, BLOCK_KINDS))
    repeats: int = attrs.field(validator=lambda i, a, v: check_int("BlockDef.repeats", v, ge=1))
    kernel: int = attrs.field(validator=lambda i, a, v: check_choice("BlockDef.kernel", v, (1, 3, 5, 7)))
    stride: int = attrs.field(validator=lambda i, a, v: check_choice("BlockDef.stride", v, (1, 2)))
    out_chs: int = attrs.field(validator=lambda i, a, v: check_int("BlockDef.out_chs", v, ge=1))
    exp_ratio: float = attrs.field(
        default=1.0, validator=lambda i, a, v: check_float("BlockDef.exp_ratio", v, ge=1.0, le=16.0)
    )
    se_ratio: float = attrs.field(
        default=0.0, validator=lambda i, a, v: check_float("BlockDef.se_ratio", v, ge=0.0, le=1.0)
    )
    act: str | None = attrs.field(default=None, validator=_opt_act)
    noskip: bool = attrs.field(default=False, validator=lambda i, a, v: check_bool("BlockDef.noskip", v))

    @classmethod
    def ds(cls, kernel: int, stride: int, out_chs: int, *, se: float = 0.0, act: str | None = None) -> BlockDef:
        """One depthwise-separable block."""
        return cls("ds", 1, kernel, stride, out_chs, se_ratio=se, act=act)

    @classmethod
    def ir(
        cls,
        repeats: int,
        kernel: int,
        stride: int,
        exp_ratio: float,
        out_chs: int,
        *,
        se: float = 0.0,
        act: str | None = None,
    ) -> BlockDef:
        """A run of inverted-residual blocks."""
        return cls("ir", repeats, kernel, stride, out_chs, exp_ratio=exp_ratio, se_ratio=se, act=act)


@attrs.frozen
class SeCfg:
    """How a family sizes and gates squeeze-and-excitation.

    from_exp: the reduced width is se_ratio of the expanded width (MobileNetV3) rather than of the block input
    (EfficientNet); round_to: that width is rounded to a multiple of it (0: to the nearest integer); act None
    takes the block's activation.
    """

    from_exp: bool = False
    round_to: int = 0
    act: str | None = None
    gate: str = attrs.field(default="sigmoid", validator=lambda i, a, v: check_choice("SeCfg.gate", v, GATES))

    def reduced(self, chs: int, se_ratio: float, exp_ratio: float) -> int:
        """The reduced width of the SE of a block whose expanded width is chs."""
        ratio = se_ratio if self.from_exp else se_ratio / exp_ratio
        if self.round_to:
            return make_divisible(chs * ratio, self.round_to)
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
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        out: torch.Tensor = x * self.gate(s)
        return out


@attrs.frozen
class _Norm:
    """Settings every block of a model shares: batch-norm eps, and whether strided convs pad TF-style."""

    eps: float
    same_pad: bool


def _drop(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class DepthwiseSeparable(nn.Module):
    """Depthwise conv (bn1 + act), optional SE, pointwise conv (bn2, no act); residual when shapes allow."""

    def __init__(self, in_chs: int, d: BlockDef, act: str, se: nn.Module, drop_path_rate: float, norm: _Norm) -> None:
        super().__init__()
        self.has_skip = d.stride == 1 and in_chs == d.out_chs and not d.noskip
        self.conv_dw = create_conv2d(in_chs, in_chs, d.kernel, d.stride, groups=in_chs, same_pad=norm.same_pad)
        self.bn1 = BatchNormAct2d(in_chs, norm.eps, act_layer=act)
        self.se = se
        self.conv_pw = create_conv2d(in_chs, d.out_chs, 1)
        self.bn2 = BatchNormAct2d(d.out_chs, norm.eps, apply_act=False)
        self.drop_path = _drop(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out


class InvertedResidual(nn.Module):
    """Pointwise expansion (bn1 + act), depthwise conv (bn2 + act), optional SE, linear projection (bn3)."""

    def __init__(
        self, in_chs: int, mid_chs: int, d: BlockDef, act: str, se: nn.Module, drop_path_rate: float, norm: _Norm
    ) -> None:
        super().__init__()
        self.has_skip = d.stride == 1 and in_chs == d.out_chs and not d.noskip
        self.conv_pw = create_conv2d(in_chs, mid_chs, 1)
        self.bn1 = BatchNormAct2d(mid_chs, norm.eps, act_layer=act)
        self.conv_dw = create_conv2d(mid_chs, mid_chs, d.kernel, d.stride, groups=mid_chs, same_pad=norm.same_pad)
        self.bn2 = BatchNormAct2d(mid_chs, norm.eps, act_layer=act)
        self.se = se
        self.conv_pwl = create_conv2d(mid_chs, d.out_chs, 1)
        self.bn3 = BatchNormAct2d(d.out_chs, norm.eps, apply_act=False)
        self.drop_path = _drop(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(self.se(y)))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out


class ConvBnAct(nn.Module):
    """A plain conv (`conv`) with bn1 + act, without a residual (the head conv of MobileNetV3's last stage)."""

    def __init__(self, in_chs: int, d: BlockDef, act: str, norm: _Norm) -> None:
        super().__init__()
        self.conv = create_conv2d(in_chs, d.out_chs, d.kernel, d.stride, same_pad=norm.same_pad)
        self.bn1 = BatchNormAct2d(d.out_chs, norm.eps, act_layer=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn1(self.conv(x))
        return out


def scale_repeats(repeats: Sequence[int], depth_multiplier: float) -> list[int]:
    """A stage's repeat counts scaled by depth_multiplier (total rounded up), spread over its runs from the last.

    The first run of a stage is the least likely to grow, as in EfficientNet's compound scaling.
    """
    left = sum(repeats)
    target = math.ceil(left * depth_multiplier)
    scaled: list[int] = []
    for r in reversed(repeats):
        n = max(1, round(r / left * target))
        scaled.append(n)
        left -= r
        target -= n
    return scaled[::-1]


@attrs.frozen
class MbStages:
    """What build_stages made: the stages (blocks.<stage>.<block>), their taps and the last width."""

    blocks: nn.Sequential
    feature_info: list[FeatureInfo]
    out_chs: int


def build_stages(
    stages: Sequence[Sequence[BlockDef]],
    in_chs: int,
    *,
    act: str,
    se: SeCfg,
    round_chs: Callable[[int], int],
    depth_multiplier: float,
    drop_path_rate: float,
    bn_eps: float,
    same_pad: bool,
    stem_reduction: int = 2,
) -> MbStages:
    """Build the block stages; a tap ends each stage that the next one strides after (and the last stage).

    Stochastic depth grows linearly with the block's position over the whole network.
    """
    runs: list[list[BlockDef]] = []
    for stage in stages:
        counts = scale_repeats([d.repeats for d in stage], depth_multiplier)
        runs.append([attrs.evolve(d, repeats=n) for d, n in zip(stage, counts, strict=True)])
    total = sum(d.repeats for run in runs for d in run)
    norm = _Norm(bn_eps, same_pad)
    blocks = nn.Sequential()
    feature_info: list[FeatureInfo] = []
    reduction, index, chs = stem_reduction, 0, in_chs
    for s, run in enumerate(runs):
        seq = nn.Sequential()
        for d in run:
            for r in range(d.repeats):
                block_def = attrs.evolve(d, out_chs=round_chs(d.out_chs), stride=d.stride if r == 0 else 1)
                rate = drop_path_rate * index / total
                seq.add_module(str(len(seq)), _make_block(chs, block_def, act, se, rate, norm))
                chs = block_def.out_chs
                reduction *= block_def.stride
                index += 1
        blocks.add_module(str(s), seq)
        if s + 1 == len(runs) or runs[s + 1][0].stride > 1:
            feature_info.append(
                FeatureInfo(index=len(feature_info), module=f"blocks.{s}", num_chs=chs, reduction=reduction)
            )
    return MbStages(blocks=blocks, feature_info=feature_info, out_chs=chs)


def google_init_(module: nn.Module) -> bool:
    """The init of TensorFlow's EfficientNet and MobileNet for one module; False for a module it leaves alone.

    A convolution is drawn from N(0, 2 / fan_out), fan_out its kernel area times its output channels per
    group; a linear layer from U(-1/sqrt(out_features), 1/sqrt(out_features)); biases are zero. Batch norms
    keep torch's reset (ones, zeros), which is TensorFlow's. A rule for archs.layers.init.init_each_module.
    """
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
    elif isinstance(module, nn.Linear):
        bound = 1.0 / math.sqrt(module.out_features)
        nn.init.uniform_(module.weight, -bound, bound)
    else:
        return False
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return True


def scale_width(chs: int, channel_multiplier: float) -> int:
    """A width scaled by channel_multiplier, rounded to a multiple of 8 (as every width of a body is)."""
    return make_divisible(chs * channel_multiplier, 8)


@attrs.frozen
class MbBody:
    """What build_body made: the stem (conv_stem, a strided 3x3 conv, and bn1) and the stages."""

    conv_stem: nn.Conv2d
    bn1: BatchNormAct2d
    stages: MbStages


def build_body(
    stages: Sequence[Sequence[BlockDef]],
    in_chans: int,
    stem_size: int,
    *,
    channel_multiplier: float,
    act: str,
    se: SeCfg,
    depth_multiplier: float,
    drop_path_rate: float,
    bn_eps: float,
    same_pad: bool,
) -> MbBody:
    """The stem and stages of an EfficientNet or MobileNetV3, every width scaled by channel_multiplier."""
    stem = scale_width(stem_size, channel_multiplier)
    conv_stem = create_conv2d(in_chans, stem, 3, 2, same_pad=same_pad)
    bn1 = BatchNormAct2d(stem, bn_eps, act_layer=act)
    built = build_stages(
        stages,
        stem,
        act=act,
        se=se,
        round_chs=functools.partial(scale_width, channel_multiplier=channel_multiplier),
        depth_multiplier=depth_multiplier,
        drop_path_rate=drop_path_rate,
        bn_eps=bn_eps,
        same_pad=same_pad,
    )
    return MbBody(conv_stem=conv_stem, bn1=bn1, stages=built)


def _make_block(in_chs: int, d: BlockDef, model_act: str, se: SeCfg, rate: float, norm: _Norm) -> nn.Module:
    act = d.act or model_act
    if d.kind == "cn":
        return ConvBnAct(in_chs, d, act, norm)
    mid = in_chs if d.kind == "ds" else make_divisible(in_chs * d.exp_ratio)
    gate: nn.Module = nn.Identity()
    if d.se_ratio > 0.0:
        gate = SqueezeExcite(mid, se.reduced(mid, d.se_ratio, d.exp_ratio), se.act or act, se.gate)
    if d.kind == "ds":
        return DepthwiseSeparable(in_chs, d, act, gate, rate, norm)
    return InvertedResidual(in_chs, mid, d, act, gate, rate, norm)


def check_stages(stages: object) -> tuple[tuple[BlockDef, ...], ...]:
    """stages as a tuple of non-empty tuples of BlockDef, or InvalidValueError naming what was given."""
    ok = (
        isinstance(stages, Sequence)
        and len(stages) > 0
        and all(isinstance(s, Sequence) and len(s) > 0 and all(isinstance(d, BlockDef) for d in s) for s in stages)
    )
    if not ok:
        raise InvalidValueError(
            f"stages={stages!r} is invalid: expected a non-empty sequence of non-empty BlockDef runs"
        )
    assert isinstance(stages, Sequence)  # for the type checker: checked above
    return tuple(tuple(s) for s in stages)


def _run_stages(stages: Sequence[nn.Module], checkpointed: bool, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for stage in stages:
        x = run_stage(stage, x, checkpointed)
    return x, x


def stage_steps(
    stem: Sequence[nn.Module], blocks: nn.Sequential, tap_stages: Sequence[int], checkpointed: bool
) -> list[TapStep]:
    """Tap steps over stem modules + stages: step i runs the stages after tap i-1 up to tap i's (the first: stem too).

    Every module is the model's own (torch.fx traces only calls of installed submodules).
    """
    stages = list(blocks)
    steps: list[TapStep] = []
    start = 0
    for end in tap_stages:
        run = stages[start : end + 1]
        steps.append(functools.partial(_run_stages, [*stem, *run] if start == 0 else run, checkpointed))
        start = end + 1
    return steps
