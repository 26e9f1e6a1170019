"""RegNet X, Y, V and Z: stage widths and depths from the quantised linear rule of RegNet.

X is the plain bottleneck design, Y adds squeeze-excitation, V is Y with pre-activation blocks, Z has
inverted bottlenecks (wider inside than out) without activations after the residual sums. The design
rule and the blocks are in regnet_blocks. Parameter names and shapes follow timm 1.0.31 for the same
model names, so published checkpoints for those names load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import torch
from torch import nn
from typing_extensions import Unpack

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs
from zoo.archs.layers import (
    ClassifierHead,
    ConvNormAct,
    GlobalPool,
    check_head,
    init_each_module,
    is_scripting,
    make_act,
)
from zoo.archs.layers.helpers import OUTPUT_STRIDES
from zoo.archs.regnet_blocks import (
    DOWNSAMPLE_TYPES,
    Bottleneck,
    PreBottleneck,
    RegNetCfg,
    StageLayout,
    make_stage,
    stage_layouts,
)
from zoo.archs.surface import TapStep, run_stage, take_taps
from zoo.domain.checks import check_bool, check_choice, check_float, check_int
from zoo.domain.errors import InvalidValueError
from zoo.domain.grouping import GroupMatcher
from zoo.domain.values import FeatureCfg, FeatureInfo, ModelSpec

__all__ = [
    "DOWNSAMPLE_TYPES",
    "MODEL_SPECS",
    "OUTPUT_STRIDES",
    "Bottleneck",
    "PreBottleneck",
    "RegNet",
    "RegNetCfg",
    "StageLayout",
    "stage_layouts",
]

STAGE_NAMES: tuple[str, ...] = ("s1", "s2", "s3", "s4")


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

        self.stem: nn.Module = (
            nn.Conv2d(in_chans, cfg.stem_width, 3, 2, 1, bias=False)  # pre-activation: the first block normalises
            if cfg.preact
            else ConvNormAct(in_chans, cfg.stem_width, 3, stride=2, act_layer=cfg.act_layer)
        )
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
            stages.append(make_stage(chs, layout, stride, dilation, stage_rates, cfg))
            chs = layout.width
            self.feature_info.append(FeatureInfo(index=i + 1, module=STAGE_NAMES[i], num_chs=chs, reduction=reduction))
        self.s1: nn.Module = stages[0]
        self.s2: nn.Module = stages[1]
        self.s3: nn.Module = stages[2]
        self.s4: nn.Module = stages[3]
        # not in place: the hook extractor's last tap is this module's input, which must survive it
        self.final_conv: nn.Module = nn.Identity()
        if cfg.num_features:
            self.final_conv = ConvNormAct(chs, cfg.num_features, 1, act_layer=cfg.act_layer)
            chs = cfg.num_features
        elif cfg.linear_out or cfg.preact:
            self.final_conv = make_act(cfg.act_layer, inplace=False)
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
        """The stem, then each block (each stage s1..s4 with coarse); final_conv (with its parameters) and the head
        last."""
        return GroupMatcher.of(stem=r"^stem", blocks=r"^s(\d+)" if coarse else r"^s(\d+)\.b(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output, through the final activation (linear_out, preact) or conv (num_features)."""
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

        prune_norm drops what follows the last stage: the final activation of linear_out and pre-activation
        designs (they have no final norm) or the final conv + norm of num_features designs. That final conv
        goes with the head too (prune_head), as in the reference: it only feeds the classifier.
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
        if isinstance(self.final_conv, ConvNormAct) and (prune_norm or prune_head):
            self.final_conv = nn.Identity()
            self.num_features = self.feature_info[-1].num_chs
            prune_head = True  # the classifier was sized for the final conv's width
        elif prune_norm:
            self.final_conv = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return list(kept)


class _Design(TypedDict, total=False):
    """RegNetCfg's fields past the width rule's five, as keywords a design passes on."""

    bottle_ratio: float
    se_ratio: float
    group_min_ratio: float
    downsample: str | None
    linear_out: bool
    preact: bool
    num_features: int
    act_layer: str


# Y: X with squeeze-excitation; V: Y pre-activated, with SiLU; Z: inverted bottlenecks with SiLU, no activation
# after the sums and no residual where the shape changes
_SE: _Design = {"se_ratio": 0.25}
_V: _Design = {"se_ratio": 0.25, "preact": True, "act_layer": "silu"}
_Z: _Design = {"bottle_ratio": 4.0, "se_ratio": 0.25, "downsample": None, "linear_out": True, "act_layer": "silu"}
# the torchvision-trained _tv designs round their bottleneck widths to group multiples as torchvision does
_TV: _Design = {"group_min_ratio": 0.9}
_SE_TV: _Design = {**_SE, **_TV}
_V_AVG: _Design = {**_V, "downsample": "avg"}  # shortcuts pool, then project
_Z_HEAD: _Design = {**_Z, "num_features": 1536}  # a final 1x1 conv + norm + activation before the head


def _arch(depth: int, w0: int, wa: float, wm: float, group_size: int, **design: Unpack[_Design]) -> dict[str, object]:
    return {"cfg": RegNetCfg(depth=depth, w0=w0, wa=wa, wm=wm, group_size=group_size, **design)}


_ARCHS: dict[str, dict[str, object]] = {
    "regnetv_040": _arch(22, 96, 31.41, 2.24, 64, **_V),
    "regnetv_064": _arch(25, 112, 33.22, 2.27, 72, **_V_AVG),
    "regnetx_002": _arch(13, 24, 36.44, 2.49, 8),
    "regnetx_004": _arch(22, 24, 24.48, 2.54, 16),
    "regnetx_004_tv": _arch(22, 24, 24.48, 2.54, 16, **_TV),
    "regnetx_006": _arch(16, 48, 36.97, 2.24, 24),
    "regnetx_008": _arch(16, 56, 35.73, 2.28, 16),
    "regnetx_016": _arch(18, 80, 34.01, 2.25, 24),
    "regnetx_032": _arch(25, 88, 26.31, 2.25, 48),
    "regnetx_040": _arch(23, 96, 38.65, 2.43, 40),
    "regnetx_064": _arch(17, 184, 60.83, 2.07, 56),
    "regnetx_080": _arch(23, 80, 49.56, 2.88, 120),
    "regnetx_120": _arch(19, 168, 73.36, 2.37, 112),
    "regnetx_160": _arch(22, 216, 55.59, 2.1, 128),
    "regnetx_320": _arch(23, 320, 69.86, 2.0, 168),
    "regnety_002": _arch(13, 24, 36.44, 2.49, 8, **_SE),
    "regnety_004": _arch(16, 48, 27.89, 2.09, 8, **_SE),
    "regnety_006": _arch(15, 48, 32.54, 2.32, 16, **_SE),
    "regnety_008": _arch(14, 56, 38.84, 2.4, 16, **_SE),
    "regnety_008_tv": _arch(14, 56, 38.84, 2.4, 16, **_SE_TV),
    "regnety_016": _arch(27, 48, 20.71, 2.65, 24, **_SE),
    "regnety_032": _arch(21, 80, 42.63, 2.66, 24, **_SE),
    "regnety_040": _arch(22, 96, 31.41, 2.24, 64, **_SE),
    "regnety_064": _arch(25, 112, 33.22, 2.27, 72, **_SE),
    "regnety_080": _arch(17, 192, 76.82, 2.19, 56, **_SE),
    "regnety_080_tv": _arch(17, 192, 76.82, 2.19, 56, **_SE_TV),
    "regnety_120": _arch(19, 168, 73.36, 2.37, 112, **_SE),
    "regnety_1280": _arch(27, 456, 160.83, 2.52, 264, **_SE),
    "regnety_160": _arch(18, 200, 106.23, 2.48, 112, **_SE),
    "regnety_2560": _arch(27, 640, 230.83, 2.53, 373, **_SE),
    "regnety_320": _arch(20, 232, 115.89, 2.53, 232, **_SE),
    "regnety_640": _arch(20, 352, 147.48, 2.4, 328, **_SE),
    # built without zero_init_last, as the reference builds them
    "regnetz_040": {**_arch(28, 48, 14.5, 2.226, 8, **_Z), "zero_init_last": False},
    "regnetz_040_h": {**_arch(28, 48, 14.5, 2.226, 8, **_Z_HEAD), "zero_init_last": False},
}

MODEL_SPECS: tuple[ModelSpec, ...] = family_specs(__name__, RegNet, _ARCHS, FeatureCfg())
