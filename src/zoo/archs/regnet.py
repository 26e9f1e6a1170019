"""RegNet X and Y (regnetx_016, regnety_016): stage widths and depths from the quantised linear rule of RegNet.

Parameter names and shapes follow timm 1.0.31 for the same model names, so published checkpoints for
those names load unchanged.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import attrs
import torch
from torch import nn

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs
from zoo.archs.layers import (
    AvgPool2dSame,
    ClassifierHead,
    ConvNormAct,
    DropPath,
    GlobalPool,
    SEModule,
    check_head,
    init_each_module,
    is_scripting,
    make_divisible,
)
from zoo.archs.surface import TapStep, run_stage, take_taps
from zoo.domain.checks import check_bool, check_choice, check_float, check_int
from zoo.domain.errors import InvalidValueError
from zoo.domain.grouping import GroupMatcher
from zoo.domain.values import FeatureCfg, FeatureInfo, ModelSpec

__all__ = ["DOWNSAMPLE_TYPES", "MODEL_SPECS", "OUTPUT_STRIDES", "Bottleneck", "RegNet", "RegNetCfg", "StageLayout"]

OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)
DOWNSAMPLE_TYPES: tuple[str | None, ...] = ("conv1x1", "avg", None)
STAGE_NAMES: tuple[str, ...] = ("s1", "s2", "s3", "s4")
WIDTH_QUANTUM = 8


@attrs.frozen
class RegNetCfg:
    """A RegNet design: per-block widths w0 + wa * j, snapped to powers of wm and multiples of 8, grouped into stages.

    group_size is the width of each group of the 3x3 convolution, se_ratio (0: none) sizes the
    squeeze-excitation from the block's input width, downsample is the projection shortcut's kind
    ('conv1x1', 'avg' for pooling then 1x1, None for no shortcut), linear_out drops each block's
    final activation (then one activation ends the network).
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
        ratio = check_float("RegNetCfg.bottle_ratio", self.bottle_ratio, le=1.0)
        if ratio <= 0.0:
            raise InvalidValueError(f"RegNetCfg.bottle_ratio={self.bottle_ratio!r} is invalid: expected 0 < ratio <= 1")
        check_float("RegNetCfg.se_ratio", self.se_ratio, ge=0.0, lt=1.0)
        check_float("RegNetCfg.group_min_ratio", self.group_min_ratio, ge=0.0, lt=1.0)
        check_int("RegNetCfg.stem_width", self.stem_width, ge=1)
        check_choice("RegNetCfg.downsample", self.downsample, DOWNSAMPLE_TYPES)
        check_bool("RegNetCfg.linear_out", self.linear_out)


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


def _shortcut(kind: str | None, in_chs: int, out_chs: int, stride: int, dilation: tuple[int, int]) -> nn.Module | None:
    """The residual path: Identity where shapes match, else a projection of the given kind (None: no residual)."""
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
        return nn.Sequential(pool, ConvNormAct(in_chs, out_chs, 1, apply_act=False))
    return ConvNormAct(in_chs, out_chs, 1, stride, apply_act=False)


class Bottleneck(nn.Module):
    """1x1, grouped 3x3 (strided), squeeze-excitation (Y), 1x1 without activation; residual, then ReLU."""

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
        self.conv1 = ConvNormAct(in_chs, mid, 1)
        self.conv2 = ConvNormAct(mid, mid, 3, stride, dilation[0], groups=mid // group_size)
        self.se: nn.Module = SEModule(mid, rd_channels=round(in_chs * cfg.se_ratio)) if cfg.se_ratio else nn.Identity()
        self.conv3 = ConvNormAct(mid, out_chs, 1, apply_act=False)
        self.act3: nn.Module = nn.Identity() if cfg.linear_out else nn.ReLU()
        # named downsample for checkpoint compatibility, though it is the shortcut (Identity where shapes match)
        self.downsample = _shortcut(cfg.downsample, in_chs, out_chs, stride, dilation)
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


def _stage(
    in_chs: int,
    layout: StageLayout,
    stride: int,
    dilation: int,
    rates: Sequence[float],
    cfg: RegNetCfg,
) -> nn.Sequential:
    """A stage's blocks b1..bN; the first strides (or starts the dilation) and changes the width."""
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    first_dilation = 1 if dilation in (1, 2) else 2
    for i in range(layout.depth):
        blocks[f"b{i + 1}"] = Bottleneck(
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


def _init_layer(m: nn.Module) -> bool:
    """RegNet's init of a conv (N(0, 2 / fan-out)) or linear (N(0, 0.01)) layer, zero bias; False for others."""
    if isinstance(m, nn.Conv2d):
        # fan-out per group, which kaiming_normal_ (fan-out over all groups) does not give
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.01)
    else:
        return False
    if m.bias is not None:
        nn.init.zeros_(m.bias)
    return True


def _init_weights(model: RegNet, *, fresh: bool) -> None:
    """RegNet's init, on construction (fresh=False: over torch's defaults) and one-pass creation (fresh: every
    tensor once): convolutions and the classifier by _init_layer, the rest torch's default; with zero_init_last
    each residual branch's last norm starts at zero scale."""
    init_each_module(model, _init_layer, fresh=fresh)
    if model._zero_init_last:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                m.zero_init_last()


class RegNet(ZooModule):
    """RegNet: a strided 3x3 stem, four stages s1..s4 of bottleneck blocks; dilation past output_stride.

    set_grad_checkpointing recomputes the stem's and each block's activations in backward.
    """

    classifier_name = "head.fc"

    def __init__(
        self,
        *,
        cfg: RegNetCfg,
        num_classes: int = 1000,
        in_chans: int = 3,
        output_stride: int = 32,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(cfg, RegNetCfg):
            raise InvalidValueError(f"cfg={cfg!r} is invalid: expected a RegNetCfg")
        in_chans = check_int("in_chans", in_chans, ge=1)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        drop_rate = check_float("drop_rate", drop_rate, ge=0.0, lt=1.0)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, ge=0.0, lt=1.0)
        check_bool("zero_init_last", zero_init_last)
        check_head(num_classes, global_pool)
        GlobalPool(global_pool)  # refuses an unknown pooling before anything is built
        layouts = stage_layouts(cfg)
        if len(layouts) != len(STAGE_NAMES):
            raise InvalidValueError(
                f"cfg={cfg!r} is invalid: its widths form {len(layouts)} stages, expected {len(STAGE_NAMES)}"
            )
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = ConvNormAct(in_chans, cfg.stem_width, 3, stride=2)
        self.feature_info = [FeatureInfo(index=0, module="stem", num_chs=cfg.stem_width, reduction=2)]
        depths = [s.depth for s in layouts]
        rates = torch.linspace(0.0, drop_path_rate, sum(depths), device="cpu").tolist()
        chs, reduction, dilation = cfg.stem_width, 2, 1
        stages: list[nn.Sequential] = []
        for i, layout in enumerate(layouts):
            stride = 2
            if reduction >= output_stride:
                dilation *= stride
                stride = 1
            reduction *= stride
            stage_rates = rates[sum(depths[:i]) : sum(depths[: i + 1])]
            stages.append(_stage(chs, layout, stride, dilation, stage_rates, cfg))
            chs = layout.width
            self.feature_info.append(FeatureInfo(index=i + 1, module=STAGE_NAMES[i], num_chs=chs, reduction=reduction))
        self.s1: nn.Module = stages[0]
        self.s2: nn.Module = stages[1]
        self.s3: nn.Module = stages[2]
        self.s4: nn.Module = stages[3]
        # not in place: the hook extractor's last tap is this module's input, which must survive it
        self.final_conv: nn.Module = nn.ReLU() if cfg.linear_out else nn.Identity()
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, global_pool, drop_rate)
        self.head_hidden_size = self.head.num_features
        self._zero_init_last = zero_init_last
        _init_weights(self, fresh=False)

    def init_all_weights(self) -> None:
        """Every tensor once, by the family's rules (_init_weights)."""
        _init_weights(self, fresh=True)

    @torch.jit.unused
    def _features_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for module in (self.stem, self.s1, self.s2, self.s3, self.s4):
            x = run_stage(module, x, True)
        return x

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The stem, then each block (each stage s1..s4 with coarse); final_conv and the head last."""
        return GroupMatcher.of(stem=r"^stem", blocks=r"^s(\d+)" if coarse else r"^s(\d+)\.b(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output (after the final activation of linear_out designs)."""
        # is_scripting() must stand in the if itself: TorchScript then drops the branch it cannot compile
        if self.grad_checkpointing and not is_scripting():  # a ternary would not be dropped
            x = self._features_checkpointed(x)
        else:
            x = self.s4(self.s3(self.s2(self.s1(self.stem(x)))))
        return self._finish(x)  # forward_intermediates ends the same way

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify; pre_logits stops before the classifier."""
        out: torch.Tensor = self.head(x, pre_logits=pre_logits)
        return out

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.final_conv(x)
        return out

    def _run(self, module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = run_stage(module, x, self.grad_checkpointing)
        return x, x

    def _tap_steps(self) -> list[TapStep]:
        steps: list[TapStep] = []
        for tap in self.feature_info:

            def step(
                x: torch.Tensor, m: nn.Module = self.get_submodule(tap.module)
            ) -> tuple[torch.Tensor, torch.Tensor]:
                return self._run(m, x)

            steps.append(step)
        return steps

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep only the stem and stages the taps at indices need (and drop the head); returns the kept indices.

        prune_norm drops the final activation of linear_out designs (the network has no final norm).
        """
        kept = take_taps(self.feature_info, indices)
        check_bool("prune_norm", prune_norm)
        check_bool("prune_head", prune_head)
        last = max(kept)
        if last < len(self.feature_info) - 1:
            for name in STAGE_NAMES[last:]:
                setattr(self, name, nn.Identity())
            self.feature_info = self.feature_info[: last + 1]
            self.num_features = self.feature_info[last].num_chs
            self.final_conv = nn.Identity()
            prune_head = True  # the classifier was sized for the dropped stages
        if prune_norm:
            self.final_conv = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return list(kept)


_ARCHS: dict[str, dict[str, object]] = {
    "regnetx_016": {"cfg": RegNetCfg(depth=18, w0=80, wa=34.01, wm=2.25, group_size=24)},
    "regnety_016": {"cfg": RegNetCfg(depth=27, w0=48, wa=20.71, wm=2.65, group_size=24, se_ratio=0.25)},
}

MODEL_SPECS: tuple[ModelSpec, ...] = family_specs(__name__, RegNet, _ARCHS, FeatureCfg())
