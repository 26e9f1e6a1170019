"""ResNet, ResNet-D, ResNeXt, Wide ResNet, SE-ResNet and ECA-ResNet.

Parameter names and shapes follow timm 1.0.31 for the same model names, so published checkpoints
for those names load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, cast

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs, pruned_layout
from zoo.archs.layers import (
    POOL_TYPES,
    AvgPool2dSame,
    DropPath,
    GlobalPool,
    check_head,
    create_attn,
    default_bias_,
    init_each_module,
    make_fc,
)
from zoo.archs.surface import Step, TapStep, is_scripting, run_stage, take_taps, tap_is_state
from zoo.domain.checks import MAX_WIDTH, check_bool, check_choice, check_float, check_int, check_ints
from zoo.domain.errors import InvalidValueError
from zoo.domain.grouping import GroupMatcher
from zoo.domain.values import FeatureCfg, FeatureInfo, ModelSpec

__all__ = ["MODEL_SPECS", "BasicBlock", "Bottleneck", "ResNet"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        cardinality: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        attn_layer: str | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise InvalidValueError(
                f"BasicBlock supports cardinality=1 and base_width=64 only, got {cardinality=}, {base_width=}"
            )
        outplanes = planes * self.expansion
        first_dilation = first_dilation or dilation
        self.conv1 = nn.Conv2d(
            inplanes, planes, 3, stride=stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, outplanes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(outplanes)
        self.se = create_attn(attn_layer, outplanes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Start the residual branch at zero so each block begins as an identity."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        if self.se is not None:
            x = self.se(x)
        x = self.drop_path(x) + shortcut
        out: torch.Tensor = self.act2(x)
        return out


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped) and 1x1 expand convolutions with a residual (ResNet-50 and up)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        cardinality: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        attn_layer: str | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        outplanes = planes * self.expansion
        first_dilation = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            width,
            width,
            3,
            stride=stride,
            padding=first_dilation,
            dilation=first_dilation,
            groups=cardinality,
            bias=False,
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.se = create_attn(attn_layer, outplanes)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Start the residual branch at zero so each block begins as an identity."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        x = self.drop_path(x) + shortcut
        out: torch.Tensor = self.act3(x)
        return out


Block = type[BasicBlock] | type[Bottleneck]


def _init_weights(model: ResNet, *, fresh: bool) -> None:
    """ResNet's init, on construction (fresh=False: over torch's defaults) and one-pass creation (fresh: every
    tensor once): convolutions Kaiming-normal (fan-out), the rest torch's default; with zero_init_last each
    residual branch's last norm starts at zero scale."""

    def rule(m: nn.Module) -> bool:
        if not isinstance(m, nn.Conv2d):
            return False
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if fresh:
            default_bias_(m)
        return True

    init_each_module(model, rule, fresh=fresh)
    if model._zero_init_last:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                m.zero_init_last()


def _downsample(inplanes: int, outplanes: int, stride: int, dilation: int, avg_down: bool) -> nn.Module:
    """The shortcut projection: a strided 1x1 conv, or (ResNet-D) average pooling then a 1x1 conv."""
    if not avg_down:
        return nn.Sequential(
            nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
            nn.BatchNorm2d(outplanes),
        )
    pool: nn.Module
    if stride == 1 and dilation == 1:
        pool = nn.Identity()
    elif stride == 1:
        pool = AvgPool2dSame(2)
    else:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    return nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, bias=False), nn.BatchNorm2d(outplanes))


class ResNet(ZooModule):
    """ResNet and its variants, selected by block type, depth, stem and shortcut style."""

    classifier_name = "fc"

    def __init__(
        self,
        *,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        output_stride: Literal[8, 16, 32] = 32,
        global_pool: str = "avg",
        cardinality: int = 1,
        base_width: int = 64,
        stem_width: int = 64,
        stem_type: Literal["", "deep"] = "",
        avg_down: bool = False,
        attn_layer: str | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        # every keyword is checked here, before any layer is built: a bad value is a ZooError naming it
        if not any(block is b for b in (BasicBlock, Bottleneck)):
            raise InvalidValueError(f"block={block!r} is invalid: expected BasicBlock or Bottleneck")
        # a zero-depth stage would have no output of its own, and feature_info would describe a stage that is not there
        layers = check_ints("layers", layers, length=4, ge=1)
        num_classes = check_int("num_classes", num_classes, ge=0, le=MAX_WIDTH)
        in_chans = check_int("in_chans", in_chans, ge=1, le=MAX_WIDTH)
        output_stride = cast(Literal[8, 16, 32], check_choice("output_stride", output_stride, (8, 16, 32)))
        check_choice("global_pool", global_pool, POOL_TYPES)
        cardinality = check_int("cardinality", cardinality, ge=1)
        base_width = check_int("base_width", base_width, ge=1)
        stem_width = check_int("stem_width", stem_width, ge=1)
        check_choice("stem_type", stem_type, ("", "deep"))
        check_bool("avg_down", avg_down)
        check_choice("attn_layer", attn_layer, (None, "", "se", "eca"))
        drop_rate = check_float("drop_rate", drop_rate, ge=0.0, lt=1.0)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, ge=0.0, lt=1.0)
        check_bool("zero_init_last", zero_init_last)
        if block is BasicBlock and (cardinality != 1 or base_width != 64):
            raise InvalidValueError(
                f"cardinality={cardinality}, base_width={base_width} is invalid with BasicBlock: "
                "it supports cardinality=1 and base_width=64 only (use Bottleneck for grouped or wider blocks)"
            )
        check_head(num_classes, global_pool)
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        inplanes = stem_width * 2 if stem_type == "deep" else 64
        self.conv1: nn.Module
        if stem_type == "deep":
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, stem_width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, stem_width, 3, padding=1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, inplanes, 3, padding=1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info = [FeatureInfo(index=0, module="act1", num_chs=inplanes, reduction=2)]

        stages: list[nn.Sequential] = []
        total_blocks = sum(layers)
        block_idx = 0
        net_stride, dilation, prev_dilation = 4, 1, 1
        for stage_idx, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if stage_idx == 0 else 2
            if net_stride >= output_stride:
                dilation *= stride
                stride = 1
            else:
                net_stride *= stride
            outplanes = planes * block.expansion
            downsample = None
            if stride != 1 or inplanes != outplanes:
                downsample = _downsample(inplanes, outplanes, stride, dilation, avg_down)
            blocks: list[nn.Module] = []
            for i in range(depth):
                rate = drop_path_rate * block_idx / max(total_blocks - 1, 1)
                blocks.append(
                    block(
                        inplanes,
                        planes,
                        stride if i == 0 else 1,
                        downsample if i == 0 else None,
                        cardinality=cardinality,
                        base_width=base_width,
                        dilation=dilation,
                        first_dilation=prev_dilation,
                        attn_layer=attn_layer,
                        drop_path_rate=rate,
                    )
                )
                prev_dilation = dilation
                inplanes = outplanes
                block_idx += 1
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(
                FeatureInfo(
                    index=stage_idx + 1, module=f"layer{stage_idx + 1}", num_chs=outplanes, reduction=net_stride
                )
            )
        self.layer1: nn.Sequential = stages[0]
        self.layer2: nn.Sequential = stages[1]
        self.layer3: nn.Sequential = stages[2]
        self.layer4: nn.Sequential = stages[3]

        self.num_features = inplanes
        self.global_pool = GlobalPool(global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.fc: nn.Module = make_fc(self.head_hidden_size, num_classes)
        self.grad_checkpointing = False
        self._zero_init_last = zero_init_last
        _init_weights(self, fresh=False)

    def init_all_weights(self) -> None:
        """Every tensor once, by the family's rules (_init_weights)."""
        _init_weights(self, fresh=True)

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The stem (conv1, bn1), then each residual block (each layer with coarse); fc last."""
        return GroupMatcher.of(stem=r"^conv1|bn1|maxpool", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final stage's feature map, at stride output_stride."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        # is_scripting is constant under torch.jit.script, which then leaves the checkpointing branch out
        if self.grad_checkpointing and not is_scripting():
            for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
                x = run_stage(stage, x, True)
            return x
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        out: torch.Tensor = self.layer4(x)
        return out

    def _tap_steps(self) -> list[TapStep]:
        # one step per feature_info tap: step i maps tap i-1's output to tap i's (act1, layer1..layer4)
        steps: tuple[Step, ...] = (
            lambda x: self.act1(self.bn1(self.conv1(x))),
            lambda x: run_stage(self.layer1, self.maxpool(x), self.grad_checkpointing),
            lambda x: run_stage(self.layer2, x, self.grad_checkpointing),
            lambda x: run_stage(self.layer3, x, self.grad_checkpointing),
            lambda x: run_stage(self.layer4, x, self.grad_checkpointing),
        )
        return [tap_is_state(step) for step in steps[: len(self.feature_info)]]

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Replace the stages after the last tap in indices with nn.Identity; returns the requested taps.

        indices is read as forward_intermediates reads it. feature_info keeps the taps up to the
        last one requested, num_features becomes that tap's width, and forward_features then ends
        at that tap; forward_intermediates serves every kept tap as before. prune_head resets the
        classifier to none and the pooling to '' (forward returns the feature map); with
        prune_head=False a classifier is kept only if its input width does not change (else
        InvalidValueError, and the model is left as it was). ResNet has no final norm, so
        prune_norm changes nothing.
        """
        taps = take_taps(self.feature_info, indices)
        check_bool("prune_norm", prune_norm)
        check_bool("prune_head", prune_head)
        last = max(taps)
        width = self.feature_info[last].num_chs
        if not prune_head and self.num_classes > 0 and width != self.num_features:
            raise InvalidValueError(
                f"prune_head=False keeps a classifier for {self.num_features} features, but pruning to tap {last} "
                f"({self.feature_info[last].module}) leaves {width}; pass prune_head=True or select the last tap"
            )
        # assignments only (never in-place changes): a shallow copy of this model may be the one pruned
        dropped = [f"layer{stage}" for stage in range(last + 1, 5)] + (["maxpool"] if last == 0 else [])
        for name in dropped:
            setattr(self, name, nn.Identity())
        self.feature_info = list(self.feature_info[: last + 1])
        self.num_features = width
        if prune_head:
            self.reset_classifier(0, "")
        else:
            self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        return list(taps)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint activations block by block in layer1..layer4 (non-reentrant torch.utils.checkpoint).

        Applies to forward_features, forward and forward_intermediates while gradients are recorded;
        a scripted or fx-traced copy of the model runs without it.
        """
        self.grad_checkpointing = check_bool("enable", enable)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify; pre_logits stops before the classifier."""
        # the same computation as layers.ClassifierHead, kept inline: ResNet's checkpoints name global_pool and fc
        # at the top level, and TorchScript cannot hand modules to a shared function
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        if pre_logits:
            return x
        out: torch.Tensor = self.fc(x)
        return out


# ResNet-D: a deep 3x3 stem and average-pooled shortcuts
_D = {"stem_width": 32, "stem_type": "deep", "avg_down": True}
# depth -> block and blocks per stage: resnet<depth> and its ResNet-D twin resnet<depth>d are built from these
_DEPTHS: dict[int, dict[str, object]] = {
    18: {"block": BasicBlock, "layers": (2, 2, 2, 2)},
    26: {"block": Bottleneck, "layers": (2, 2, 2, 2)},
    34: {"block": BasicBlock, "layers": (3, 4, 6, 3)},
    50: {"block": Bottleneck, "layers": (3, 4, 6, 3)},
    101: {"block": Bottleneck, "layers": (3, 4, 23, 3)},
    152: {"block": Bottleneck, "layers": (3, 8, 36, 3)},
}
_ARCHS: dict[str, dict[str, object]] = {
    **{f"resnet{depth}": args for depth, args in _DEPTHS.items()},
    **{f"resnet{depth}d": {**args, **_D} for depth, args in _DEPTHS.items()},
    "resnext50_32x4d": {**_DEPTHS[50], "cardinality": 32, "base_width": 4},
    "resnext101_32x8d": {**_DEPTHS[101], "cardinality": 32, "base_width": 8},
    "wide_resnet50_2": {**_DEPTHS[50], "base_width": 128},
    "wide_resnet101_2": {**_DEPTHS[101], "base_width": 128},
    "seresnet50": {**_DEPTHS[50], "attn_layer": "se"},
    "ecaresnet50d": {**_DEPTHS[50], "attn_layer": "eca", **_D},
}


# Pruned ECA-ResNet-D: the unpruned architecture rebuilt at the published checkpoints' channel widths.
_PRUNED: dict[str, dict[str, object]] = {
    "ecaresnet50d_pruned": _ARCHS["ecaresnet50d"],
    "ecaresnet101d_pruned": {**_DEPTHS[101], "attn_layer": "eca", **_D},
}

MODEL_SPECS: tuple[ModelSpec, ...] = tuple(
    attrs.evolve(spec, prune_spec=pruned_layout(spec.name)) if spec.name in _PRUNED else spec
    for spec in family_specs(__name__, ResNet, {**_ARCHS, **_PRUNED}, FeatureCfg(feature_cls="list"))
)
