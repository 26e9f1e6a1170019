"""Cross-stage-partial networks (CSPResNe(X)t, CSPDarkNet, CS3DarkNet/EdgeNet) and DarkNet, with dilation
for output_stride 8/16. The blocks, stages and stem are in cspnet_blocks.py.

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
from zoo.archs.cspnet_blocks import (
    BottleneckBlock,
    ConvArgs,
    CrossStage,
    CrossStage3,
    DarkBlock,
    DarkStage,
    EdgeBlock,
    StageCfg,
    StemCfg,
    make_stage,
    make_stem,
)
from zoo.archs.layers import (
    NORM_LAYERS,
    ClassifierHead,
    GlobalPool,
    check_head,
    init_each_module,
    is_scripting,
    sequential_prefix,
)
from zoo.archs.layers.helpers import OUTPUT_STRIDES
from zoo.archs.surface import TapStep, checkpoint_call, take_taps
from zoo.domain.checks import check_bool, check_choice, check_float, check_int
from zoo.domain.errors import InvalidValueError
from zoo.domain.grouping import GroupMatcher, GroupRule
from zoo.domain.values import FeatureCfg, FeatureInfo, ModelSpec

__all__ = [
    "MODEL_SPECS",
    "OUTPUT_STRIDES",
    "BottleneckBlock",
    "CrossStage",
    "CrossStage3",
    "CspNet",
    "DarkBlock",
    "DarkStage",
    "EdgeBlock",
    "StageCfg",
    "StemCfg",
]

ACT_LAYERS: tuple[str, ...] = ("leaky_relu", "relu", "silu")


def _init_weights(model: CspNet, *, fresh: bool) -> None:
    """CspNet's init, on construction (fresh=False: over torch's defaults) and one-pass creation (fresh: every
    tensor once): convolutions Kaiming-normal (fan-out) with zero bias (the attention's have one), the
    classifier N(0, 0.01) with zero bias, the rest torch's default; with zero_init_last each residual
    branch's last norm starts at zero scale."""

    def rule(m: nn.Module) -> bool:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            return True
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
            return True
        return False

    init_each_module(model, rule, fresh=fresh)
    if model._zero_init_last:
        for m in model.modules():
            if isinstance(m, (BottleneckBlock, DarkBlock, EdgeBlock)):
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
        check_choice("act_layer", act_layer, ACT_LAYERS)
        check_choice("norm_layer", norm_layer, NORM_LAYERS)
        if norm_layer == "iabn" and act_layer != "leaky_relu":
            raise InvalidValueError(f"act_layer={act_layer!r} is invalid with norm_layer='iabn': expected 'leaky_relu'")
        check_bool("zero_init_last", zero_init_last)
        check_head(num_classes, global_pool)
        GlobalPool(global_pool)  # refuses an unknown pooling before anything is built
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        cargs = ConvArgs(act_layer, norm_layer)

        self.stem, stem_taps, prev = make_stem(in_chans, stem_cfg, cargs)
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
            self.stages.add_module(str(i), make_stage(cfg, chs, stride, dilation, first_dilation, stage_rates, cargs))
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


def _darknet(depths: Sequence[int], avg_down: bool = False) -> tuple[StageCfg, ...]:
    return _stages(
        depths,
        _DARK_WIDTHS,
        (2,),
        bottle_ratio=(0.5,),
        stage_type=("dark",),
        block_type=("dark",),
        avg_down=(avg_down,),
    )


# CS3 sizes: the four stages' depths and the first stage's width (the others double it)
_CS3_SIZES: dict[str, tuple[tuple[int, ...], int]] = {
    "s": ((1, 3, 4, 1), 64),
    "m": ((2, 4, 6, 2), 96),
    "l": ((3, 6, 9, 3), 128),
    "x": ((3, 7, 11, 3), 160),
}


def _cs3(
    size: str, *, focus: bool = False, block_type: str = "dark", se_ratio: float | None = None
) -> dict[str, object]:
    """A CS3 network's arguments: a stride-2 stem (two 3x3 convs, or focus: one 6x6), four cs3 stages, SiLU.

    Dark blocks keep the width of the half they run on, edge blocks widen it 1.5 times inside; se_ratio
    puts squeeze-and-excitation of that ratio in each block.
    """
    depths, width = _CS3_SIZES[size]
    if focus:
        stem = StemCfg(out_chs=(width // 2,), kernel_size=6, stride=2, padding=2)
    else:
        stem = StemCfg(out_chs=(width // 4, width // 2), kernel_size=3, stride=2)
    attn: dict[str, Sequence[object]] = (
        {} if se_ratio is None else {"attn_layer": ("se",), "attn_rd_ratio": (se_ratio,)}
    )
    stages = _stages(
        depths,
        [width * 2**i for i in range(4)],
        (2,),
        stage_type=("cs3",),
        block_type=(block_type,),
        block_ratio=(0.5,),
        bottle_ratio=(1.5 if block_type == "edge" else 1.0,),
        **attn,
    )
    return {"stem_cfg": stem, "stage_cfgs": stages, "act_layer": "silu"}


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
    "darknetaa53": {"stem_cfg": _DARK_STEM, "stage_cfgs": _darknet(_DARK_DEPTHS, avg_down=True)},
    "cs3darknet_focus_s": _cs3("s", focus=True),
    "cs3darknet_focus_m": _cs3("m", focus=True),
    "cs3darknet_focus_l": _cs3("l", focus=True),
    "cs3darknet_m": _cs3("m"),
    "cs3darknet_l": _cs3("l"),
    "cs3darknet_x": _cs3("x"),
    "cs3sedarknet_l": _cs3("l", se_ratio=0.25),
    "cs3sedarknet_x": _cs3("x", se_ratio=1 / 16),
    "cs3edgenet_x": _cs3("x", block_type="edge"),
    "cs3se_edgenet_x": _cs3("x", block_type="edge", se_ratio=0.25),
}

MODEL_SPECS: tuple[ModelSpec, ...] = family_specs(
    __name__, CspNet, _ARCHS, FeatureCfg(feature_cls="list", flatten_sequential=True)
)
