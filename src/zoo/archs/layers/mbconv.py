"""Mobile inverted-bottleneck bodies (EfficientNet, MobileNetV3): scaling and the stage builder.

The block definitions live in layers.block_def, the blocks in layers.mb_blocks; both are re-exported here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import attrs
import torch
from torch import nn

from zoo.archs.layers.block_def import BLOCK_KINDS, KERNELS, BlockDef
from zoo.archs.layers.block_norms import make_block_norm
from zoo.archs.layers.cond_conv import CondConv2d
from zoo.archs.layers.helpers import make_divisible
from zoo.archs.layers.mb_blocks import (
    GATES,
    SE_LAYERS,
    BlockNorm,
    CondConvResidual,
    ConvBnAct,
    DepthwiseSeparable,
    EdgeResidual,
    InvertedResidual,
    SeCfg,
    SqueezeExcite,
)
from zoo.archs.layers.mobile_attention import MobileAttention
from zoo.archs.layers.padding import create_conv2d
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
    "SE_LAYERS",
    "BlockDef",
    "CondConvResidual",
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
    norm_layer: str = "batchnorm",
    layer_scale: float | None = None,
    aa_layer: str | None = None,
    output_stride: int = 32,
) -> MbStages:
    """Build the block stages; a tap ends each stage that the next one strides after (and the last stage).

    Stochastic depth grows linearly with the block's position over the whole network. A stride that would
    take the maps past output_stride becomes dilation instead: that block runs at stride 1 with the dilation
    so far, the blocks after it at that dilation times the stride (the taps' reductions stop growing).
    """
    runs = [
        [attrs.evolve(d, repeats=n) for d, n in zip(stage, counts, strict=True)]
        for stage, counts in zip(stages, scaling.stage_repeats(stages), strict=True)
    ]
    total = sum(d.repeats for run in runs for d in run)
    norm = BlockNorm(bn_eps, same_pad, norm_layer, layer_scale, aa_layer)
    blocks = nn.Sequential()
    feature_info: list[FeatureInfo] = []
    if runs[0][0].stride > 1 or runs[0][0].s2d:  # the stem's output is a tap of its own
        feature_info.append(FeatureInfo(index=0, module="bn1", num_chs=in_chs, reduction=stem_reduction))
    reduction, index, chs = stem_reduction, 0, in_chs
    # space to depth: 0 off, 1 the block that folds space, 2 the blocks at 4x widths after it
    s2d, dilation = 0, 1
    for s, run in enumerate(runs):
        seq = nn.Sequential()
        for d in run:
            for r in range(d.repeats):
                stride, exp_ratio = d.stride if r == 0 else 1, d.exp_ratio
                if not s2d and d.s2d:
                    s2d, reduction = 1, reduction * 2
                if s2d == 2 and stride == 2:  # the maps are already folded: this block expands 4x less instead
                    stride, exp_ratio, s2d = 1, exp_ratio / 4, 0
                folds = s2d == 1
                next_dilation = dilation
                if stride > 1 and reduction * stride > output_stride:
                    stride, next_dilation = 1, dilation * stride
                block_def = attrs.evolve(
                    d,
                    out_chs=scaling.width(d.out_chs) * (4 if s2d else 1),
                    stride=stride,
                    exp_ratio=exp_ratio,
                    se_ratio=d.se_ratio / 4 if folds else d.se_ratio,
                    s2d=folds,
                    force_in_chs=scaling.width(d.force_in_chs) if d.force_in_chs else 0,
                    dilation=dilation,
                )
                rate = drop_path_rate * index / total
                block = _make_block(chs, block_def, act, se, rate, norm, reduction)
                seq.add_module(str(len(seq)), block)
                chs = block_def.out_chs
                reduction *= block_def.stride
                dilation = next_dilation
                index += 1
                s2d = 2 if s2d else 0
        blocks.add_module(str(s), seq)
        if s + 1 == len(runs) or (runs[s + 1][0].stride > 1 and not s2d):
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
    if isinstance(module, CondConv2d):  # every expert as the conv it mixes into; no bias
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        return True
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
    bn1: nn.Module
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
    norm_layer: str = "batchnorm",
    layer_scale: float | None = None,
    aa_layer: str | None = None,
    output_stride: int = 32,
) -> MbBody:
    """The stem and stages of an EfficientNet or MobileNetV3, scaled by scaling (output_stride: build_stages)."""
    stem = stem_size if scaling.fix_stem else scaling.width(stem_size)
    conv_stem = create_conv2d(in_chans, stem, stem_kernel, 2, same_pad=same_pad)
    bn1 = make_block_norm(norm_layer, stem, bn_eps, act_layer=act)
    built = build_stages(
        stages,
        stem,
        act=act,
        se=se,
        scaling=scaling,
        drop_path_rate=drop_path_rate,
        bn_eps=bn_eps,
        same_pad=same_pad,
        norm_layer=norm_layer,
        layer_scale=layer_scale,
        aa_layer=aa_layer,
        output_stride=output_stride,
    )
    return MbBody(conv_stem=conv_stem, bn1=bn1, stages=built)


def _make_block(
    in_chs: int, d: BlockDef, model_act: str, se: SeCfg, rate: float, norm: BlockNorm, reduction: int
) -> nn.Module:
    """The block d defines, taking in_chs channels at reduction (its input's stride to the image)."""
    act = d.act or model_act
    if d.kind == "mqa":
        return MobileAttention(
            in_chs, d.out_chs, num_heads=d.num_heads, key_dim=d.key_dim, kv_stride=d.kv_stride, kernel=d.kernel[0],
            noskip=d.noskip or d.stride > 1, drop_path_rate=rate, eps=norm.eps, same_pad=norm.same_pad,
            layer_scale=norm.layer_scale, reduction=reduction * d.stride, dilation=d.dilation,
        )  # fmt: skip
    if d.kind == "cn":
        return ConvBnAct(in_chs, d, act, rate, norm)
    mid = in_chs * (4 if d.s2d else 1) if d.kind == "ds" else make_divisible((d.force_in_chs or in_chs) * d.exp_ratio)
    gate: nn.Module = nn.Identity()
    if d.se_ratio > 0.0:
        gate = se.build(mid, d.se_ratio, d.exp_ratio, act)
    if d.kind == "ds":
        return DepthwiseSeparable(in_chs, d, act, gate, rate, norm)
    if d.kind == "uir":
        return UniversalInvertedResidual(
            in_chs, mid, d.out_chs, (d.exp_kernel[0], d.kernel[0], d.pw_kernel[0]), d.stride,
            group_size=1 if d.group_size is None else d.group_size, noskip=d.noskip, act=act, se=gate,
            drop_path_rate=rate, eps=norm.eps, same_pad=norm.same_pad, layer_scale=norm.layer_scale, aa=norm.aa,
            dilation=d.dilation,
        )  # fmt: skip
    if d.kind == "er":
        return EdgeResidual(in_chs, mid, d, act, gate, rate, norm)
    if d.num_experts:
        return CondConvResidual(in_chs, mid, d, act, gate, rate, norm)
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

    A tap stage of -1 is the stem's own output. Every module is the model's own (torch.fx traces only calls
    of installed submodules).
    """
    stages = list(blocks)
    steps: list[TapStep] = []
    start, pending = 0, list(stem)
    for end in tap_stages:
        run = stages[start : end + 1]
        steps.append(functools.partial(_run_stages, [*pending, *run], checkpointed))
        start, pending = end + 1, []
    return steps
