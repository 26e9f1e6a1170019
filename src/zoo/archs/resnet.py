"""ResNet, ResNet-D, ResNeXt, Wide ResNet, SE-ResNet and ECA-ResNet.

Parameter names and shapes follow timm 1.0.31 for the same model names, so published checkpoints
for those names load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs, pruned_layout
from zoo.archs.layers import NORM2D_LAYERS, POOL_TYPES, GlobalPool, check_head, default_bias_, init_each_module, make_fc
from zoo.archs.layers.norm import make_norm2d
from zoo.archs.resnet_blocks import BasicBlock, Bottleneck, make_downsample, make_stem, make_stem_pool
from zoo.archs.surface import Step, TapStep, is_scripting, run_stage, take_taps, tap_is_state
from zoo.domain.checks import MAX_WIDTH, check_bool, check_choice, check_float, check_int, check_ints
from zoo.domain.errors import InvalidValueError
from zoo.domain.grouping import GroupMatcher
from zoo.domain.values import FeatureCfg, FeatureInfo, ModelSpec

__all__ = ["MODEL_SPECS", "BasicBlock", "Bottleneck", "ResNet"]


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


class ResNet(ZooModule):
    """ResNet and its variants, selected by block type, depth, stem and shortcut style."""

    classifier_name = "fc"

    def __init__(
        self,
        *,
        block: Block | Sequence[Block],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        output_stride: Literal[8, 16, 32] = 32,
        global_pool: str = "avg",
        cardinality: int = 1,
        base_width: int = 64,
        channels: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        stem_type: Literal["", "deep", "deep_tiered"] = "",
        replace_stem_pool: bool = False,
        block_reduce_first: int = 1,
        down_kernel_size: int = 1,
        avg_down: bool = False,
        norm_layer: Literal["batchnorm", "groupnorm"] = "batchnorm",
        aa_layer: Literal["avg", "blur"] | None = None,
        attn_layer: str | None = None,
        attn_rd_ratio: float = 1.0 / 16,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        # every keyword is checked here, before any layer is built: a bad value is a ZooError naming it
        # one block type for every stage, or one per stage (test_resnet mixes them)
        blocks_of = tuple(block) if isinstance(block, Sequence) else (block,) * 4
        if len(blocks_of) != 4 or not all(any(b is k for k in (BasicBlock, Bottleneck)) for b in blocks_of):
            raise InvalidValueError(
                f"block={block!r} is invalid: expected BasicBlock or Bottleneck, "
                "or a sequence of 4 of them (one per stage)"
            )
        # a zero-depth stage would have no output of its own, and feature_info would describe a stage that is not there
        layers = check_ints("layers", layers, length=4, ge=1)
        num_classes = check_int("num_classes", num_classes, ge=0, le=MAX_WIDTH)
        in_chans = check_int("in_chans", in_chans, ge=1, le=MAX_WIDTH)
        output_stride = cast(Literal[8, 16, 32], check_choice("output_stride", output_stride, (8, 16, 32)))
        check_choice("global_pool", global_pool, POOL_TYPES)
        cardinality = check_int("cardinality", cardinality, ge=1)
        base_width = check_int("base_width", base_width, ge=1)
        channels = check_ints("channels", channels, length=4, ge=1, le=MAX_WIDTH)
        stem_width = check_int("stem_width", stem_width, ge=1, le=MAX_WIDTH)
        check_choice("stem_type", stem_type, ("", "deep", "deep_tiered"))
        check_bool("replace_stem_pool", replace_stem_pool)
        block_reduce_first = check_int("block_reduce_first", block_reduce_first, ge=1)
        down_kernel_size = check_int("down_kernel_size", down_kernel_size, ge=1, le=7)
        check_bool("avg_down", avg_down)
        check_choice("norm_layer", norm_layer, NORM2D_LAYERS)
        check_choice("aa_layer", aa_layer, (None, "", "avg", "blur"))
        check_choice("attn_layer", attn_layer, (None, "", "se", "eca"))
        attn_rd_ratio = check_float("attn_rd_ratio", attn_rd_ratio, ge=1e-3, le=1.0)
        drop_rate = check_float("drop_rate", drop_rate, ge=0.0, lt=1.0)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, ge=0.0, lt=1.0)
        check_bool("zero_init_last", zero_init_last)
        if BasicBlock in blocks_of and (cardinality != 1 or base_width != 64):
            raise InvalidValueError(
                f"cardinality={cardinality}, base_width={base_width} is invalid with BasicBlock: "
                "it supports cardinality=1 and base_width=64 only (use Bottleneck for grouped or wider blocks)"
            )
        check_head(num_classes, global_pool)
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        self.conv1: nn.Module
        self.conv1, inplanes = make_stem(in_chans, stem_width, stem_type, norm_layer)
        self.bn1 = make_norm2d(norm_layer, inplanes)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = make_stem_pool(
            inplanes, replace_stem_pool=replace_stem_pool, aa_layer=aa_layer, norm_layer=norm_layer
        )
        self.feature_info = [FeatureInfo(index=0, module="act1", num_chs=inplanes, reduction=2)]

        stages: list[nn.Sequential] = []
        total_blocks = sum(layers)
        block_idx = 0
        net_stride, dilation, prev_dilation = 4, 1, 1
        for stage_idx, (stage_block, planes, depth) in enumerate(zip(blocks_of, channels, layers, strict=True)):
            stride = 1 if stage_idx == 0 else 2
            if net_stride >= output_stride:
                dilation *= stride
                stride = 1
            else:
                net_stride *= stride
            outplanes = planes * stage_block.expansion
            downsample = None
            if stride != 1 or inplanes != outplanes:
                downsample = make_downsample(
                    inplanes,
                    outplanes,
                    stride=stride,
                    dilation=dilation,
                    first_dilation=prev_dilation,
                    avg_down=avg_down,
                    kernel_size=down_kernel_size,
                    norm_layer=norm_layer,
                )
            blocks: list[nn.Module] = []
            for i in range(depth):
                rate = drop_path_rate * block_idx / max(total_blocks - 1, 1)
                blocks.append(
                    stage_block(
                        inplanes,
                        planes,
                        stride if i == 0 else 1,
                        downsample if i == 0 else None,
                        cardinality=cardinality,
                        base_width=base_width,
                        reduce_first=block_reduce_first,
                        dilation=dilation,
                        first_dilation=prev_dilation,
                        norm_layer=norm_layer,
                        attn_layer=attn_layer,
                        attn_rd_ratio=attn_rd_ratio,
                        aa_layer=aa_layer,
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


# Stems and shortcuts, by the letter the names carry (the 'Bag of Tricks' variants):
# c: a deep 3x3 stem (32, 32, 64); s: the same at (64, 64, 128); d: c with average-pooled shortcuts;
# t: d with a tiered stem (24, 32, 64)
_C: dict[str, object] = {"stem_width": 32, "stem_type": "deep"}
_S: dict[str, object] = {"stem_width": 64, "stem_type": "deep"}
_D: dict[str, object] = {**_C, "avg_down": True}
_T: dict[str, object] = {**_D, "stem_type": "deep_tiered"}
# ResNet-RS: a ResNet-D whose stem pool is a strided conv, with squeeze-excitation at a quarter width
_RS: dict[str, object] = {**_D, "replace_stem_pool": True, "attn_layer": "se", "attn_rd_ratio": 0.25}
_SE: dict[str, object] = {"attn_layer": "se"}
_ECA: dict[str, object] = {"attn_layer": "eca"}
_AA: dict[str, object] = {"aa_layer": "avg"}


def _x(cardinality: int, base_width: int) -> dict[str, object]:
    """ResNeXt's grouped bottleneck: <cardinality>x<base_width>d."""
    return {"cardinality": cardinality, "base_width": base_width}


def _bottleneck(*layers: int) -> dict[str, object]:
    return {"block": Bottleneck, "layers": layers}


# depth -> block and blocks per stage: resnet<depth> and its ResNet-D twin resnet<depth>d are built from these
_DEPTHS: dict[int, dict[str, object]] = {
    18: {"block": BasicBlock, "layers": (2, 2, 2, 2)},
    26: _bottleneck(2, 2, 2, 2),
    34: {"block": BasicBlock, "layers": (3, 4, 6, 3)},
    50: _bottleneck(3, 4, 6, 3),
    101: _bottleneck(3, 4, 23, 3),
    152: _bottleneck(3, 8, 36, 3),
}
_R50, _R101, _R152 = _DEPTHS[50], _DEPTHS[101], _DEPTHS[152]
_R200 = _bottleneck(3, 24, 36, 3)
_ARCHS: dict[str, dict[str, object]] = {
    **{f"resnet{depth}": args for depth, args in _DEPTHS.items()},
    **{f"resnet{depth}d": {**args, **_D} for depth, args in _DEPTHS.items()},
    "resnext50_32x4d": {**_R50, **_x(32, 4)},
    "resnext101_32x8d": {**_R101, **_x(32, 8)},
    "wide_resnet50_2": {**_R50, "base_width": 128},
    "wide_resnet101_2": {**_R101, "base_width": 128},
    "seresnet50": {**_R50, **_SE},
    "ecaresnet50d": {**_R50, **_ECA, **_D},
    **{f"resnet{depth}c": {**_DEPTHS[depth], **_C} for depth in (50, 101, 152)},
    **{f"resnet{depth}s": {**_DEPTHS[depth], **_S} for depth in (50, 101, 152)},
    "resnet10t": {"block": BasicBlock, "layers": (1, 1, 1, 1), **_T},
    "resnet14t": {**_bottleneck(1, 1, 1, 1), **_T},
    "resnet26t": {**_DEPTHS[26], **_T},
    "resnet200d": {**_R200, **_D},
    "resnext50d_32x4d": {**_R50, **_x(32, 4), **_D},
    **{f"resnext101_{c}x{w}d": {**_R101, **_x(c, w)} for c, w in ((32, 4), (64, 4), (32, 16), (32, 32))},
    "seresnext26d_32x4d": {**_DEPTHS[26], **_x(32, 4), **_D, **_SE},
    "seresnext26t_32x4d": {**_DEPTHS[26], **_x(32, 4), **_T, **_SE},
    "seresnext50_32x4d": {**_R50, **_x(32, 4), **_SE},
    **{f"seresnext101_{c}x{w}d": {**_R101, **_x(c, w), **_SE} for c, w in ((32, 4), (32, 8), (64, 4))},
    "seresnext101d_32x8d": {**_R101, **_x(32, 8), **_D, **_SE},
    "seresnet152d": {**_R152, **_D, **_SE},
    "ecaresnet26t": {**_DEPTHS[26], **_T, **_ECA},
    "ecaresnet50t": {**_R50, **_T, **_ECA},
    "ecaresnet101d": {**_R101, **_D, **_ECA},
    "ecaresnet269d": {**_bottleneck(3, 30, 48, 8), **_D, **_ECA},
    # ECA-lite: a 7x7 stem, few early blocks, average-pooled shortcuts
    "ecaresnetlight": {**_bottleneck(1, 1, 11, 3), "stem_width": 32, "avg_down": True, **_ECA},
    "resnetaa50": {**_R50, **_AA},
    "resnetaa50d": {**_R50, **_D, **_AA},
    "resnetaa101d": {**_R101, **_D, **_AA},
    "seresnextaa101d_32x8d": {**_R101, **_x(32, 8), **_D, **_AA, **_SE},
    "seresnextaa201d_32x8d": {**_bottleneck(3, 24, 36, 4), **_x(32, 8), **_D, "stem_width": 64, **_AA, **_SE},
    "resnetblur50": {**_R50, "aa_layer": "blur"},
    "resnet50_gn": {**_R50, "norm_layer": "groupnorm"},
    "resnetrs50": {**_R50, **_RS},
    "resnetrs101": {**_R101, **_RS},
    "resnetrs152": {**_R152, **_RS},
    "resnetrs200": {**_R200, **_RS},
    "resnetrs270": {**_bottleneck(4, 29, 53, 4), **_RS},
    "resnetrs350": {**_bottleneck(4, 36, 72, 4), **_RS},
    "resnetrs420": {**_bottleneck(4, 44, 87, 4), **_RS},
    # SENet-154: a deep 64-wide stem, 64x4d blocks whose first conv halves the width, 3x3 strided shortcuts
    "senet154": {**_R152, **_x(64, 4), **_S, "down_kernel_size": 3, "block_reduce_first": 2, **_SE},
    "test_resnet": {
        "block": (BasicBlock, BasicBlock, Bottleneck, BasicBlock),
        "layers": (1, 1, 1, 1),
        "channels": (32, 48, 48, 96),
        **_D,
        "stem_width": 16,
    },
}


# Pruned ECA-ResNet-D: the unpruned architecture rebuilt at the published checkpoints' channel widths.
_PRUNED: dict[str, dict[str, object]] = {
    "ecaresnet50d_pruned": _ARCHS["ecaresnet50d"],
    "ecaresnet101d_pruned": {**_R101, **_ECA, **_D},
}

MODEL_SPECS: tuple[ModelSpec, ...] = tuple(
    attrs.evolve(spec, prune_spec=pruned_layout(spec.name)) if spec.name in _PRUNED else spec
    for spec in family_specs(__name__, ResNet, {**_ARCHS, **_PRUNED}, FeatureCfg(feature_cls="list"))
)
