"""Cross-stage-partial networks (CSPResNet(X)t, CSPDarkNet) and DarkNet, with dilation for output_stride 8/16.

Parameter names and shapes follow timm 1.0.31 for the same model names (cspresnext50_iabn and
cspdarknet53_iabn follow timm 0.4.12, which built them on in-place activated batch norm; zoo builds
that norm in pure PyTorch), so published checkpoints for those names load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import nn

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs
from zoo.archs.layers import (
    NORM_LAYERS,
    ClassifierHead,
    ConvNormAct,
    DropPath,
    GlobalPool,
    check_head,
    default_bias_,
    init_each_module,
    is_scripting,
    make_act,
    sequential_prefix,
)
from zoo.archs.surface import TapStep, checkpoint_call, take_taps
from zoo.domain.checks import check_bool, check_choice, check_float, check_int, check_ints
from zoo.domain.errors import InvalidValueError
from zoo.domain.grouping import GroupMatcher, GroupRule
from zoo.domain.values import FeatureCfg, FeatureInfo, ModelSpec

__all__ = [
    "MODEL_SPECS",
    "OUTPUT_STRIDES",
    "BottleneckBlock",
    "CrossStage",
    "CspNet",
    "DarkBlock",
    "DarkStage",
    "StageCfg",
    "StemCfg",
]

OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)
STAGE_TYPES: tuple[str, ...] = ("csp", "dark")
BLOCK_TYPES: tuple[str, ...] = ("bottle", "dark")


@attrs.frozen
class StemCfg:
    """The stem: one conv per width in out_chs, total stride 1, 2 or 4 (4 with a max pool after the convs)."""

    out_chs: tuple[int, ...]
    kernel_size: int = 3
    stride: int = 2
    pool: bool = False

    def __attrs_post_init__(self) -> None:
        chs = check_ints("StemCfg.out_chs", self.out_chs, ge=1)
        if not chs:
            raise InvalidValueError(f"StemCfg.out_chs={self.out_chs!r} is invalid: expected at least one width")
        check_choice("StemCfg.kernel_size", self.kernel_size, (1, 3, 5, 7))
        check_choice("StemCfg.stride", self.stride, (1, 2, 4))
        check_bool("StemCfg.pool", self.pool)
        if self.pool and self.stride != 4:
            raise InvalidValueError(f"StemCfg.pool=True is invalid with stride={self.stride}: expected stride 4")


@attrs.frozen
class StageCfg:
    """One stage: its depth and width, stride, and the cross-stage split's and blocks' ratios."""

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

    def __attrs_post_init__(self) -> None:
        check_int("StageCfg.depth", self.depth, ge=1)
        check_int("StageCfg.out_chs", self.out_chs, ge=1)
        check_choice("StageCfg.stride", self.stride, (1, 2))
        check_choice("StageCfg.stage_type", self.stage_type, STAGE_TYPES)
        check_choice("StageCfg.block_type", self.block_type, BLOCK_TYPES)
        check_int("StageCfg.groups", self.groups, ge=1)
        for name in ("block_ratio", "bottle_ratio", "expand_ratio"):
            ratio = check_float(f"StageCfg.{name}", getattr(self, name), ge=0.0)
            if ratio <= 0.0:
                raise InvalidValueError(f"StageCfg.{name}={ratio!r} is invalid: expected a ratio > 0")
        check_bool("StageCfg.cross_linear", self.cross_linear)
        check_bool("StageCfg.down_growth", self.down_growth)


@attrs.frozen
class _ConvArgs:
    # what every conv + norm + act of a model shares
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
    ) -> ConvNormAct:
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
        )


class BottleneckBlock(nn.Module):
    """ResNe(X)t bottleneck: 1x1, grouped 3x3, linear 1x1, the residual added, then the activation."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        dilation: int,
        bottle_ratio: float,
        groups: int,
        drop_path_rate: float,
        cargs: _ConvArgs,
    ) -> None:
        super().__init__()
        mid_chs = round(out_chs * bottle_ratio)
        self.conv1 = cargs.conv(in_chs, mid_chs)
        self.conv2 = cargs.conv(mid_chs, mid_chs, 3, dilation=dilation, groups=groups)
        self.conv3 = cargs.conv(mid_chs, out_chs, apply_act=False)
        self.drop_path: nn.Module = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()
        self.act3 = make_act(cargs.act_layer)

    def zero_init_last(self) -> None:
        """Start the residual branch at zero: its last norm's scale."""
        nn.init.zeros_(self.conv3.bn.get_parameter("weight"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        out = self.drop_path(out) + x
        result: torch.Tensor = self.act3(out)
        return result


class DarkBlock(nn.Module):
    """DarkNet residual block: 1x1 down to the bottleneck, 3x3 back up, the input added (no activation after)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        dilation: int,
        bottle_ratio: float,
        groups: int,
        drop_path_rate: float,
        cargs: _ConvArgs,
    ) -> None:
        super().__init__()
        mid_chs = round(out_chs * bottle_ratio)
        self.conv1 = cargs.conv(in_chs, mid_chs)
        self.conv2 = cargs.conv(mid_chs, out_chs, 3, dilation=dilation, groups=groups)
        self.drop_path: nn.Module = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Start the residual branch at zero: its last norm's scale."""
        nn.init.zeros_(self.conv2.bn.get_parameter("weight"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        result: torch.Tensor = self.drop_path(out) + x
        return result


def _blocks(
    cfg: StageCfg, in_chs: int, dilation: int, rates: Sequence[float], cargs: _ConvArgs
) -> tuple[nn.Sequential, int]:
    """A stage's residual blocks (named 0..depth-1) and their output width."""
    block_cls = DarkBlock if cfg.block_type == "dark" else BottleneckBlock
    out_chs = round(cfg.out_chs * cfg.block_ratio)
    blocks = nn.Sequential()
    for i in range(cfg.depth):
        blocks.add_module(str(i), block_cls(in_chs, out_chs, dilation, cfg.bottle_ratio, cfg.groups, rates[i], cargs))
        in_chs = out_chs
    return blocks, out_chs


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
        cargs: _ConvArgs,
    ) -> None:
        super().__init__()
        self.conv_down: nn.Module = nn.Identity()
        prev_chs = in_chs
        if stride != 1 or first_dilation != dilation:
            prev_chs = cfg.out_chs if cfg.down_growth else in_chs
            self.conv_down = cargs.conv(in_chs, prev_chs, 3, stride, first_dilation, cfg.groups)
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


class DarkStage(nn.Module):
    """DarkNet stage: a strided 3x3 conv, then residual blocks."""

    def __init__(
        self,
        cfg: StageCfg,
        in_chs: int,
        stride: int,
        dilation: int,
        first_dilation: int,
        rates: Sequence[float],
        cargs: _ConvArgs,
    ) -> None:
        super().__init__()
        self.conv_down = cargs.conv(in_chs, cfg.out_chs, 3, stride, first_dilation, cfg.groups)
        self.blocks, _ = _blocks(cfg, cfg.out_chs, dilation, rates, cargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.blocks(self.conv_down(x))
        return out


def _stem(in_chans: int, cfg: StemCfg, cargs: _ConvArgs) -> tuple[nn.Sequential, list[FeatureInfo], FeatureInfo]:
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
        stem.add_module(f"conv{i + 1}", cargs.conv(chs, out_chs, cfg.kernel_size, stride))
        chs, reduction = out_chs, reduction * stride
        prev = FeatureInfo(index=0, module=f"stem.conv{i + 1}", num_chs=chs, reduction=reduction)
    assert prev is not None  # StemCfg holds at least one width
    if cfg.pool:
        taps.append(prev)
        stem.add_module("pool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        reduction *= 2
        prev = FeatureInfo(index=0, module="stem.pool", num_chs=chs, reduction=reduction)
    return stem, taps, prev


def _init_weights(model: CspNet, *, fresh: bool) -> None:
    """CspNet's init, on construction (fresh=False: over torch's defaults) and one-pass creation (fresh: every
    tensor once): convolutions Kaiming-normal (fan-out), the classifier N(0, 0.01) with zero bias, the rest
    torch's default; with zero_init_last each residual branch's last norm starts at zero scale."""

    def rule(m: nn.Module) -> bool:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if fresh:
                default_bias_(m)
            return True
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
            return True
        return False

    init_each_module(model, rule, fresh=fresh)
    if model._zero_init_last:
        for m in model.modules():
            if isinstance(m, (BottleneckBlock, DarkBlock)):
                m.zero_init_last()


class CspNet(ZooModule):
    """Cross-stage-partial network (or plain DarkNet): a stem, then stages of residual blocks; no final norm.

    set_grad_checkpointing recomputes the stem's and each stage's activations in backward.
    """

    classifier_name = "head.fc"

    def __init__(
        self,
        *,
        stem_cfg: StemCfg,
        stage_cfgs: Sequence[StageCfg],
        num_classes: int = 1000,
        in_chans: int = 3,
        output_stride: int = 32,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer: str = "leaky_relu",
        norm_layer: str = "batchnorm",
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(stem_cfg, StemCfg):
            raise InvalidValueError(f"stem_cfg={stem_cfg!r} is invalid: expected a StemCfg")
        if not stage_cfgs or not all(isinstance(s, StageCfg) for s in stage_cfgs):
            raise InvalidValueError(f"stage_cfgs={stage_cfgs!r} is invalid: expected a non-empty sequence of StageCfg")
        in_chans = check_int("in_chans", in_chans, ge=1)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        drop_rate = check_float("drop_rate", drop_rate, ge=0.0, lt=1.0)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, ge=0.0, lt=1.0)
        check_choice("act_layer", act_layer, ("leaky_relu", "relu"))
        check_choice("norm_layer", norm_layer, NORM_LAYERS)
        if norm_layer == "iabn" and act_layer != "leaky_relu":
            raise InvalidValueError(f"act_layer={act_layer!r} is invalid with norm_layer='iabn': expected 'leaky_relu'")
        check_bool("zero_init_last", zero_init_last)
        check_head(num_classes, global_pool)
        GlobalPool(global_pool)  # refuses an unknown pooling before anything is built
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        cargs = _ConvArgs(act_layer, norm_layer)

        self.stem, stem_taps, prev = _stem(in_chans, stem_cfg, cargs)
        taps = list(stem_taps)
        depths = [s.depth for s in stage_cfgs]
        rates = torch.linspace(0.0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.Sequential()
        chs, reduction, dilation = prev.num_chs, prev.reduction, 1
        for i, cfg in enumerate(stage_cfgs):
            stride = cfg.stride
            if stride > 1:
                taps.append(prev)  # the stage strides: the map entering it is a tap
            if reduction >= output_stride and stride > 1:
                dilation *= stride
                stride = 1
            reduction *= stride
            first_dilation = 1 if dilation in (1, 2) else 2
            stage_rates = rates[sum(depths[:i]) : sum(depths[: i + 1])]
            stage_cls = DarkStage if cfg.stage_type == "dark" else CrossStage
            self.stages.add_module(str(i), stage_cls(cfg, chs, stride, dilation, first_dilation, stage_rates, cargs))
            chs = cfg.out_chs
            prev = FeatureInfo(index=0, module=f"stages.{i}", num_chs=chs, reduction=reduction)
        taps.append(prev)
        self.feature_info = [attrs.evolve(t, index=i) for i, t in enumerate(taps)]

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
        for module in (self.stem, *self.stages):
            x = checkpoint_call(module, module, x)
        return x

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The stem, then each block with its stage's convs (each stage with coarse); the head last."""
        if coarse:
            return GroupMatcher.of(stem=r"^stem", blocks=r"^stages\.(\d+)")
        return GroupMatcher.of(
            stem=r"^stem",
            blocks=(
                GroupRule(r"^stages\.(\d+)\.blocks\.(\d+)"),
                # a stage's transition convs join its last block; its other convs (downsampling, split) its first
                GroupRule(r"^stages\.(\d+)\..*transition", joins_previous=True),
                GroupRule(r"^stages\.(\d+)", suffix=(0,)),
            ),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output (the network has no final norm)."""
        # is_scripting() must stand in the if itself: TorchScript then drops the branch it cannot compile
        if self.grad_checkpointing and not is_scripting():  # a ternary would not be dropped
            x = self._features_checkpointed(x)
        else:
            x = self.stages(self.stem(x))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify; pre_logits stops before the classifier."""
        out: torch.Tensor = self.head(x, pre_logits=pre_logits)
        return out

    def _chain(self) -> list[tuple[str, nn.Module]]:
        # the network as one chain of named modules: the stem's children, then the stages
        return [(f"stem.{n}", m) for n, m in self.stem.named_children()] + [
            (f"stages.{n}", m) for n, m in self.stages.named_children()
        ]

    def _run(self, modules: Sequence[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        checkpointed = self.grad_checkpointing and torch.is_grad_enabled()
        for m in modules:
            x = checkpoint_call(m, m, x) if checkpointed else m(x)
        return x, x

    def _tap_steps(self) -> list[TapStep]:
        chain = self._chain()
        ends = {name: i for i, (name, _) in enumerate(chain)}
        steps: list[TapStep] = []
        start = 0
        for tap in self.feature_info:
            end = ends[tap.module] + 1
            modules = [m for _, m in chain[start:end]]

            def step(x: torch.Tensor, ms: list[nn.Module] = modules) -> tuple[torch.Tensor, torch.Tensor]:
                return self._run(ms, x)

            steps.append(step)
            start = end
        return steps

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep only the stem and stages the taps at indices need (and drop the head); returns the kept indices.

        prune_norm changes nothing here: the network has no final norm.
        """
        kept = take_taps(self.feature_info, indices)
        check_bool("prune_norm", prune_norm)
        check_bool("prune_head", prune_head)
        last = self.feature_info[max(kept)]
        if last.index < len(self.feature_info) - 1:
            part, _, child = last.module.partition(".")
            if part == "stem":
                names = [n for n, _ in self.stem.named_children()]
                self.stem = sequential_prefix(self.stem, names.index(child) + 1)
                self.stages = nn.Sequential()
            else:
                self.stages = sequential_prefix(self.stages, int(child) + 1)
            self.feature_info = self.feature_info[: last.index + 1]
            self.num_features = last.num_chs
            prune_head = True  # the classifier was sized for the dropped stages
        if prune_head:
            self.reset_classifier(0, "")
        return list(kept)


def _stages(
    depth: Sequence[int],
    out_chs: Sequence[int],
    stride: Sequence[int],
    **per_stage: Sequence[object],
) -> tuple[StageCfg, ...]:
    """StageCfgs from per-stage columns; a column shorter than depth repeats its last value."""
    n = len(depth)

    def pad(col: Sequence[object]) -> list[object]:
        return [*col, *[col[-1]] * (n - len(col))][:n]

    cols = {"stride": pad(stride), **{k: pad(v) for k, v in per_stage.items()}}
    return tuple(
        StageCfg(d, c, **{k: v[i] for k, v in cols.items()})  # type: ignore[arg-type]  # StageCfg checks each value
        for i, (d, c) in enumerate(zip(depth, out_chs, strict=True))
    )


_RESNET_DEPTHS = (3, 3, 5, 2)
_DARK_DEPTHS = (1, 2, 8, 8, 4)
_DARK_WIDTHS = (64, 128, 256, 512, 1024)
_DARK_STEM = StemCfg(out_chs=(32,), kernel_size=3, stride=1)
_CSPRESNET_STEM = StemCfg(out_chs=(64,), kernel_size=7, stride=4, pool=True)
_DEEP_STEM = StemCfg(out_chs=(32, 32, 64), kernel_size=3, stride=4, pool=True)


def _cspresnet(widths: Sequence[int], **ratios: Sequence[object]) -> tuple[StageCfg, ...]:
    return _stages(_RESNET_DEPTHS, widths, (1, 2), cross_linear=(True,), **ratios)


def _darknet(depths: Sequence[int]) -> tuple[StageCfg, ...]:
    return _stages(depths, _DARK_WIDTHS, (2,), bottle_ratio=(0.5,), stage_type=("dark",), block_type=("dark",))


_CSPRESNEXT = _cspresnet(
    (256, 512, 1024, 2048), groups=(32,), expand_ratio=(1.0,), bottle_ratio=(1.0,), block_ratio=(0.5,)
)
_CSPDARKNET = _stages(
    _DARK_DEPTHS,
    _DARK_WIDTHS,
    (2,),
    expand_ratio=(2.0, 1.0),
    bottle_ratio=(0.5, 1.0),
    block_ratio=(1.0, 0.5),
    down_growth=(True,),
    block_type=("dark",),
)
_CSPRESNET = _cspresnet((128, 256, 512, 1024), expand_ratio=(2.0,), bottle_ratio=(0.5,))
_ARCHS: dict[str, dict[str, object]] = {
    "cspresnet50": {"stem_cfg": _CSPRESNET_STEM, "stage_cfgs": _CSPRESNET},
    "cspresnet50d": {"stem_cfg": _DEEP_STEM, "stage_cfgs": _CSPRESNET},
    "cspresnet50w": {
        "stem_cfg": _DEEP_STEM,
        "stage_cfgs": _cspresnet((256, 512, 1024, 2048), expand_ratio=(1.0,), bottle_ratio=(0.25,), block_ratio=(0.5,)),
    },
    "cspresnext50": {"stem_cfg": _CSPRESNET_STEM, "stage_cfgs": _CSPRESNEXT},
    "cspresnext50_iabn": {"stem_cfg": _CSPRESNET_STEM, "stage_cfgs": _CSPRESNEXT, "norm_layer": "iabn"},
    "cspdarknet53": {"stem_cfg": _DARK_STEM, "stage_cfgs": _CSPDARKNET},
    "cspdarknet53_iabn": {"stem_cfg": _DARK_STEM, "stage_cfgs": _CSPDARKNET, "norm_layer": "iabn"},
    "darknet17": {"stem_cfg": _DARK_STEM, "stage_cfgs": _darknet((1, 1, 1, 1, 1))},
    "darknet21": {"stem_cfg": _DARK_STEM, "stage_cfgs": _darknet((1, 1, 1, 2, 2))},
    "darknet53": {"stem_cfg": _DARK_STEM, "stage_cfgs": _darknet(_DARK_DEPTHS)},
}

MODEL_SPECS: tuple[ModelSpec, ...] = family_specs(
    __name__, CspNet, _ARCHS, FeatureCfg(feature_cls="list", flatten_sequential=True)
)
