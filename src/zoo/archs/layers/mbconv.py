"""Mobile inverted-bottleneck blocks (EfficientNet, MobileNetV3): their typed definitions and the stage builder.

Module and parameter names follow timm 1.0.31 (conv_pw/bn1/conv_dw/bn2/se/conv_pwl/bn3, se.conv_reduce/
conv_expand), so the checkpoints published for those families load unchanged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import attrs
import torch
from torch import nn

from zoo.archs.layers.drop import DropPath
from zoo.archs.layers.helpers import make_divisible
from zoo.archs.layers.mixed_conv import block_conv
from zoo.archs.layers.mobile_attention import MobileAttention
from zoo.archs.layers.norm_act import ACT_LAYERS, BatchNormAct2d, make_act
from zoo.archs.layers.padding import create_conv2d
from zoo.archs.layers.pool import create_aa
from zoo.archs.layers.uir import UniversalInvertedResidual
from zoo.archs.surface import TapStep, run_stage
from zoo.domain.checks import check_bool, check_choice, check_float, check_int
from zoo.domain.errors import InvalidValueError
from zoo.domain.values import FeatureInfo

__all__ = [
    "BLOCK_KINDS",
    "DEPTH_TRUNCS",
    "GATES",
    "KERNELS",
    "BlockDef",
    "ConvBnAct",
    "DepthwiseSeparable",
    "EdgeResidual",
    "InvertedResidual",
    "MbBody",
    "MbStages",
    "Scaling",
    "SeCfg",
    "SqueezeExcite",
    "build_body",
    "build_stages",
    "check_stages",
    "google_init_",
    "scale_repeats",
    "stage_steps",
    "tap_stage",
]

BLOCK_KINDS: tuple[str, ...] = ("ds", "ir", "er", "cn", "uir", "mqa")
GATES: tuple[str, ...] = ("sigmoid", "hard_sigmoid")
KERNELS: tuple[int, ...] = (1, 3, 5, 7, 9, 11)


def _opt_act(inst: object, a: attrs.Attribute[str | None], v: str | None) -> None:
    if v is not None:
        check_choice(f"BlockDef.{a.name}", v, ACT_LAYERS)


def _kernels(value: int | Sequence[int]) -> tuple[int, ...]:
    # a bare int is one kernel; _check_kernels then checks every size
    if isinstance(value, Sequence):
        return tuple(value)
    return (value,)


def _check_kernels(inst: object, a: attrs.Attribute[tuple[int, ...]], v: tuple[int, ...]) -> None:
    if not v:
        raise InvalidValueError(f"BlockDef.{a.name}={v!r} is invalid: expected at least one kernel size")
    # a 'uir' block's three depthwise kernels (kernel, exp_kernel, pw_kernel) may be 0: that conv is left out
    allowed = (0, *KERNELS) if getattr(inst, "kind", None) == "uir" else KERNELS
    for k in v:
        check_choice(f"BlockDef.{a.name}", k, allowed)


@attrs.frozen
class BlockDef:
    """One run of identical blocks of one kind.

    Kinds: 'ds' depthwise-separable, 'ir' inverted residual (MBConv), 'er' edge residual (fused MBConv:
    a full conv expands), 'cn' conv-bn-act, 'uir' universal inverted residual (MobileNetV4: kernel is the
    middle depthwise conv's, exp_kernel the start one's, pw_kernel the end one's, 0 for none; depthwise by
    default), 'mqa' mobile multi-query attention (num_heads, key_dim, kv_stride; kernel: the strided key/value
    conv's). The first block of the run strides; act None takes the model's activation; se_ratio 0 means
    no squeeze-and-excitation. kernel is the spatial conv's kernel
    (the depthwise one; 'er': the expansion's), exp_kernel / pw_kernel the 1x1 expansion's and projection's;
    several sizes make a mixed-kernel conv over as many channel groups. group_size None is the kind's
    grouping (depthwise for 'ds'/'ir', dense for 'er'/'cn'), 0 dense, n groups of n channels. noskip
    drops the residual of 'ds'/'ir'/'er'; skip gives 'cn' one; pw_act activates 'ds''s projection;
    num_experts > 0 makes an 'ir' CondConv; force_in_chs sizes an 'er' expansion from that width.
    """

    kind: str = attrs.field(validator=lambda i, a, v: check_choice("BlockDef.kind", v, BLOCK_KINDS))
    repeats: int = attrs.field(validator=lambda i, a, v: check_int("BlockDef.repeats", v, ge=1))
    kernel: tuple[int, ...] = attrs.field(converter=_kernels, validator=_check_kernels)
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
    exp_kernel: tuple[int, ...] = attrs.field(default=(1,), converter=_kernels, validator=_check_kernels)
    pw_kernel: tuple[int, ...] = attrs.field(default=(1,), converter=_kernels, validator=_check_kernels)
    group_size: int | None = attrs.field(
        default=None, validator=lambda i, a, v: v is None or check_int("BlockDef.group_size", v, ge=0)
    )
    skip: bool = attrs.field(default=False, validator=lambda i, a, v: check_bool("BlockDef.skip", v))
    pw_act: bool = attrs.field(default=False, validator=lambda i, a, v: check_bool("BlockDef.pw_act", v))
    num_experts: int = attrs.field(default=0, validator=lambda i, a, v: check_int("BlockDef.num_experts", v, ge=0))
    force_in_chs: int = attrs.field(default=0, validator=lambda i, a, v: check_int("BlockDef.force_in_chs", v, ge=0))
    num_heads: int = attrs.field(default=0, validator=lambda i, a, v: check_int("BlockDef.num_heads", v, ge=0))
    key_dim: int = attrs.field(default=0, validator=lambda i, a, v: check_int("BlockDef.key_dim", v, ge=0))
    kv_stride: int = attrs.field(default=1, validator=lambda i, a, v: check_int("BlockDef.kv_stride", v, ge=1))

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

    def groups(self, chs: int) -> int:
        """The groups of this block's spatial conv over chs channels."""
        size = self.group_size if self.group_size is not None else (1 if self.kind in ("ds", "ir", "uir") else 0)
        if size == 0:
            return 1
        if chs % size:
            raise InvalidValueError(f"BlockDef.group_size={size} is invalid: it does not divide {chs} channels")
        return chs // size


@attrs.frozen
class SeCfg:
    """How a family sizes and gates squeeze-and-excitation.

    from_exp: the reduced width is se_ratio of the expanded width (MobileNetV3) rather than of the block input
    (EfficientNet); round_to: that width is rounded to a multiple of it (0: to the nearest integer); act None
    takes the block's activation; round_limit: how far below the exact width the rounding may go.
    """

    from_exp: bool = False
    round_to: int = 0
    act: str | None = None
    gate: str = attrs.field(default="sigmoid", validator=lambda i, a, v: check_choice("SeCfg.gate", v, GATES))
    round_limit: float = 0.9

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
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        out: torch.Tensor = x * self.gate(s)
        return out


@attrs.frozen
class _Norm:
    """Settings every block of a model shares: batch-norm eps, whether strided convs pad TF-style, the layer
    scale's initial value of 'uir' and 'mqa' blocks (None: none), and the anti-aliasing kind of strided ones."""

    eps: float
    same_pad: bool
    layer_scale: float | None = None
    aa: str | None = None


def _drop(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


def _aa(norm: _Norm, chs: int, stride: int) -> tuple[int, nn.Module]:
    # anti-aliased striding: the conv runs at stride 1 and `aa` downsamples after its norm
    if norm.aa and stride > 1:
        return 1, create_aa(norm.aa, chs, stride)
    return stride, nn.Identity()


def _skip(in_chs: int, d: BlockDef) -> bool:
    return d.stride == 1 and in_chs == d.out_chs and not d.noskip


class DepthwiseSeparable(nn.Module):
    """Depthwise conv (bn1 + act), optional SE, pointwise conv (bn2, act if pw_act); residual when shapes allow."""

    def __init__(self, in_chs: int, d: BlockDef, act: str, se: nn.Module, drop_path_rate: float, norm: _Norm) -> None:
        super().__init__()
        self.has_skip = _skip(in_chs, d)
        stride, self.aa = _aa(norm, in_chs, d.stride)
        self.conv_dw = block_conv(in_chs, in_chs, d.kernel, stride, groups=d.groups(in_chs), same_pad=norm.same_pad)
        self.bn1 = BatchNormAct2d(in_chs, norm.eps, act_layer=act)
        self.se = se
        self.conv_pw = block_conv(in_chs, d.out_chs, d.pw_kernel, same_pad=norm.same_pad)
        self.bn2 = BatchNormAct2d(d.out_chs, norm.eps, apply_act=d.pw_act, act_layer=act)
        self.drop_path = _drop(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(x))))))
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
        self.has_skip = _skip(in_chs, d)
        self.conv_pw = block_conv(in_chs, mid_chs, d.exp_kernel, same_pad=norm.same_pad)
        self.bn1 = BatchNormAct2d(mid_chs, norm.eps, act_layer=act)
        stride, self.aa = _aa(norm, mid_chs, d.stride)
        self.conv_dw = block_conv(mid_chs, mid_chs, d.kernel, stride, groups=d.groups(mid_chs), same_pad=norm.same_pad)
        self.bn2 = BatchNormAct2d(mid_chs, norm.eps, act_layer=act)
        self.se = se
        self.conv_pwl = block_conv(mid_chs, d.out_chs, d.pw_kernel, same_pad=norm.same_pad)
        self.bn3 = BatchNormAct2d(d.out_chs, norm.eps, apply_act=False)
        self.drop_path = _drop(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aa(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x)))))
        y = self.bn3(self.conv_pwl(self.se(y)))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out


class EdgeResidual(nn.Module):
    """Fused MBConv: a full (strided) conv expands (bn1 + act), optional SE, linear projection (bn2)."""

    def __init__(
        self, in_chs: int, mid_chs: int, d: BlockDef, act: str, se: nn.Module, drop_path_rate: float, norm: _Norm
    ) -> None:
        super().__init__()
        self.has_skip = _skip(in_chs, d)
        groups = d.groups(mid_chs)  # grouped by the expanded width, as the reference does
        stride, self.aa = _aa(norm, mid_chs, d.stride)
        self.conv_exp = block_conv(in_chs, mid_chs, d.kernel, stride, groups=groups, same_pad=norm.same_pad)
        self.bn1 = BatchNormAct2d(mid_chs, norm.eps, act_layer=act)
        self.se = se
        self.conv_pwl = block_conv(mid_chs, d.out_chs, d.pw_kernel, same_pad=norm.same_pad)
        self.bn2 = BatchNormAct2d(d.out_chs, norm.eps, apply_act=False)
        self.drop_path = _drop(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pwl(self.se(self.aa(self.bn1(self.conv_exp(x))))))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out


class ConvBnAct(nn.Module):
    """A plain conv (`conv`) with bn1 + act; a residual only where the def asks (skip) and shapes allow."""

    def __init__(self, in_chs: int, d: BlockDef, act: str, drop_path_rate: float, norm: _Norm) -> None:
        super().__init__()
        self.has_skip = d.skip and d.stride == 1 and in_chs == d.out_chs
        stride, self.aa = _aa(norm, d.out_chs, d.stride)
        self.conv = create_conv2d(
            in_chs, d.out_chs, d.kernel[0], stride, groups=d.groups(in_chs), same_pad=norm.same_pad
        )
        self.bn1 = BatchNormAct2d(d.out_chs, norm.eps, act_layer=act)
        self.drop_path = _drop(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aa(self.bn1(self.conv(x)))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out


def scale_repeats(repeats: Sequence[int], depth_multiplier: float, trunc: str = "ceil") -> list[int]:
    """A stage's repeat counts scaled by depth_multiplier, spread over its runs from the last.

    The scaled total is rounded up (trunc 'ceil', EfficientNet's compound scaling) or to the nearest
    integer, at least 1 (trunc 'round', as MixNet-M/L/XL and TinyNet scale). The first run of a stage
    is the least likely to grow.
    """
    left = sum(repeats)
    target = math.ceil(left * depth_multiplier) if trunc == "ceil" else max(1, round(left * depth_multiplier))
    scaled: list[int] = []
    for r in reversed(repeats):
        n = max(1, round(r / left * target))
        scaled.append(n)
        left -= r
        target -= n
    return scaled[::-1]


DEPTH_TRUNCS: tuple[str, ...] = ("ceil", "round")


def _check_depths(inst: object, a: object, v: float | tuple[float, ...]) -> None:
    for m in v if isinstance(v, tuple) else (v,):
        check_float("depth_multiplier", m, ge=0.1, le=8.0)


def _depths(value: float | Sequence[float]) -> float | tuple[float, ...]:
    return tuple(value) if isinstance(value, Sequence) else value


@attrs.frozen
class Scaling:
    """How a body scales its base definition: widths, repeat counts and the stem.

    Widths are multiplied by channel_multiplier and rounded to a multiple of divisor, never below round_limit
    of the product. depth_multiplier (one, or one per stage) scales each stage's repeats (trunc: see
    scale_repeats); fix_first_last keeps the first and last stages' repeats, fix_stem the stem's width.
    """

    channel_multiplier: float = attrs.field(
        default=1.0, validator=lambda i, a, v: check_float("channel_multiplier", v, ge=0.1, le=8.0)
    )
    depth_multiplier: float | tuple[float, ...] = attrs.field(default=1.0, converter=_depths, validator=_check_depths)
    divisor: int = attrs.field(default=8, validator=lambda i, a, v: check_int("channel_divisor", v, ge=1))
    round_limit: float = attrs.field(
        default=0.9, validator=lambda i, a, v: check_float("round_limit", v, ge=0.0, le=1.0)
    )
    depth_trunc: str = attrs.field(
        default="ceil", validator=lambda i, a, v: check_choice("depth_trunc", v, DEPTH_TRUNCS)
    )
    fix_first_last: bool = attrs.field(default=False, validator=lambda i, a, v: check_bool("fix_first_last", v))
    fix_stem: bool = attrs.field(default=False, validator=lambda i, a, v: check_bool("fix_stem", v))

    def width(self, chs: int) -> int:
        """A width scaled and rounded as this body's block widths are."""
        return make_divisible(chs * self.channel_multiplier, self.divisor, round_limit=self.round_limit)

    def stage_repeats(self, stages: Sequence[Sequence[BlockDef]]) -> list[list[int]]:
        """Every run's scaled repeat count, stage by stage."""
        depths = self.depth_multiplier
        per_stage = depths if isinstance(depths, tuple) else (depths,) * len(stages)
        if len(per_stage) != len(stages):
            raise InvalidValueError(
                f"depth_multiplier={depths!r} is invalid: expected one multiplier or one per stage ({len(stages)})"
            )
        last = len(stages) - 1
        return [
            scale_repeats(
                [d.repeats for d in stage],
                1.0 if self.fix_first_last and s in (0, last) else m,
                self.depth_trunc,
            )
            for s, (stage, m) in enumerate(zip(stages, per_stage, strict=True))
        ]


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
    scaling: Scaling,
    drop_path_rate: float,
    bn_eps: float,
    same_pad: bool,
    stem_reduction: int = 2,
    layer_scale: float | None = None,
    aa_layer: str | None = None,
) -> MbStages:
    """Build the block stages; a tap ends each stage that the next one strides after (and the last stage).

    Where the first stage strides, the stem's output (bn1) is the first tap.

    Stochastic depth grows linearly with the block's position over the whole network.
    """
    runs = [
        [attrs.evolve(d, repeats=n) for d, n in zip(stage, counts, strict=True)]
        for stage, counts in zip(stages, scaling.stage_repeats(stages), strict=True)
    ]
    total = sum(d.repeats for run in runs for d in run)
    norm = _Norm(bn_eps, same_pad, layer_scale, aa_layer)
    blocks = nn.Sequential()
    feature_info: list[FeatureInfo] = []
    reduction, index, chs = stem_reduction, 0, in_chs
    if runs[0][0].stride > 1:
        feature_info.append(FeatureInfo(index=0, module="bn1", num_chs=chs, reduction=reduction))
    for s, run in enumerate(runs):
        seq = nn.Sequential()
        for d in run:
            for r in range(d.repeats):
                block_def = attrs.evolve(
                    d,
                    out_chs=scaling.width(d.out_chs),
                    stride=d.stride if r == 0 else 1,
                    force_in_chs=scaling.width(d.force_in_chs) if d.force_in_chs else 0,
                )
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


@attrs.frozen
class MbBody:
    """What build_body made: the stem (conv_stem, a strided conv, and bn1) and the stages."""

    conv_stem: nn.Conv2d
    bn1: BatchNormAct2d
    stages: MbStages


def build_body(
    stages: Sequence[Sequence[BlockDef]],
    in_chans: int,
    stem_size: int,
    *,
    scaling: Scaling,
    act: str,
    se: SeCfg,
    drop_path_rate: float,
    bn_eps: float,
    same_pad: bool,
    stem_kernel: int = 3,
    layer_scale: float | None = None,
    aa_layer: str | None = None,
) -> MbBody:
    """The stem and stages of an EfficientNet or MobileNetV3, scaled by scaling."""
    stem = stem_size if scaling.fix_stem else scaling.width(stem_size)
    conv_stem = create_conv2d(in_chans, stem, stem_kernel, 2, same_pad=same_pad)
    bn1 = BatchNormAct2d(stem, bn_eps, act_layer=act)
    built = build_stages(
        stages,
        stem,
        act=act,
        se=se,
        scaling=scaling,
        drop_path_rate=drop_path_rate,
        bn_eps=bn_eps,
        same_pad=same_pad,
        layer_scale=layer_scale,
        aa_layer=aa_layer,
    )
    return MbBody(conv_stem=conv_stem, bn1=bn1, stages=built)


def _make_block(in_chs: int, d: BlockDef, model_act: str, se: SeCfg, rate: float, norm: _Norm) -> nn.Module:
    act = d.act or model_act
    if d.kind == "mqa":
        return MobileAttention(
            in_chs, d.out_chs, num_heads=d.num_heads, key_dim=d.key_dim, kv_stride=d.kv_stride, kernel=d.kernel[0],
            noskip=d.noskip or d.stride > 1, drop_path_rate=rate, eps=norm.eps, same_pad=norm.same_pad,
            layer_scale=norm.layer_scale,
        )  # fmt: skip
    if d.kind == "cn":
        return ConvBnAct(in_chs, d, act, rate, norm)
    mid = in_chs if d.kind == "ds" else make_divisible((d.force_in_chs or in_chs) * d.exp_ratio)
    gate: nn.Module = nn.Identity()
    if d.se_ratio > 0.0:
        gate = SqueezeExcite(mid, se.reduced(mid, d.se_ratio, d.exp_ratio), se.act or act, se.gate)
    if d.kind == "ds":
        return DepthwiseSeparable(in_chs, d, act, gate, rate, norm)
    if d.kind == "uir":
        return UniversalInvertedResidual(
            in_chs, mid, d.out_chs, (d.exp_kernel[0], d.kernel[0], d.pw_kernel[0]), d.stride,
            group_size=1 if d.group_size is None else d.group_size, noskip=d.noskip, act=act, se=gate,
            drop_path_rate=rate, eps=norm.eps, same_pad=norm.same_pad, layer_scale=norm.layer_scale, aa=norm.aa,
        )  # fmt: skip
    if d.kind == "er":
        return EdgeResidual(in_chs, mid, d, act, gate, rate, norm)
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


def tap_stage(info: FeatureInfo) -> int:
    """The stage a tap ends (its 'blocks.<stage>' module); -1 for the stem's tap ('bn1')."""
    return -1 if info.module == "bn1" else int(info.module.split(".")[1])


def stage_steps(
    stem: Sequence[nn.Module], blocks: nn.Sequential, tap_stages: Sequence[int], checkpointed: bool
) -> list[TapStep]:
    """Tap steps over stem modules + stages: step i runs the stages after tap i-1 up to tap i's (the first: stem too).

    A tap stage of -1 is the stem's own output.

    Every module is the model's own (torch.fx traces only calls of installed submodules).
    """
    stages = list(blocks)
    steps: list[TapStep] = []
    start = 0
    for end in tap_stages:
        run = stages[start : end + 1]
        steps.append(functools.partial(_run_stages, run if steps else [*stem, *run], checkpointed))
        start = end + 1
    return steps
