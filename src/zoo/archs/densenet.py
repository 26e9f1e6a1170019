"""DenseNet (121/169/201/161/264), its deep-stem variants and the anti-aliased (blur pooled) DenseNet-121d.

Parameter names and shapes follow timm 1.0.31 for the same model names (densenet121d and densenet264
follow timm 0.4.12, which later versions dropped), so published checkpoints for those names load unchanged.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs
from zoo.archs.layers import (
    BatchNormAct2d,
    BlurPool2d,
    GlobalPool,
    check_head,
    default_bias_,
    init_each_module,
    is_scripting,
    make_fc,
    sequential_prefix,
    sequential_steps,
)
from zoo.archs.surface import TapStep, checkpoint_call, take_taps
from zoo.domain.checks import check_bool, check_choice, check_float, check_int, check_ints
from zoo.domain.errors import InvalidValueError
from zoo.domain.grouping import GroupMatcher, GroupRule
from zoo.domain.values import FeatureCfg, FeatureInfo, ModelSpec

__all__ = ["AA_LAYERS", "MODEL_SPECS", "STEM_TYPES", "DenseBlock", "DenseLayer", "DenseNet", "DenseTransition"]

STEM_TYPES: tuple[str, ...] = ("", "deep", "deep_tiered", "deep_tiered_narrow")
AA_LAYERS: tuple[str | None, ...] = (None, "blur")


class DenseLayer(nn.Module):
    """Batch norm, ReLU and a 1x1 bottleneck over every earlier output, then a 3x3 conv adding growth_rate maps."""

    def __init__(
        self, in_chs: int, growth_rate: int, bn_size: int, drop_rate: float = 0.0, memory_efficient: bool = False
    ) -> None:
        super().__init__()
        width = bn_size * growth_rate
        self.norm1 = BatchNormAct2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, width, kernel_size=1, bias=False)
        self.norm2 = BatchNormAct2d(width)
        self.conv2 = nn.Conv2d(width, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.grad_checkpointing = memory_efficient

    def bottleneck(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The 1x1 bottleneck over the concatenated inputs (the part memory-efficient mode recomputes)."""
        out: torch.Tensor = self.conv1(self.norm1(torch.cat(features, 1)))
        return out

    @torch.jit.unused
    def _bottleneck_checkpointed(self, features: list[torch.Tensor]) -> torch.Tensor:
        # the concatenation is what grows quadratically with depth: recompute it in backward instead of keeping it
        return checkpoint_call(self, lambda *xs: self.bottleneck(list(xs)), *features)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.grad_checkpointing and not is_scripting():
            x = self._bottleneck_checkpointed(features)
        else:
            x = self.bottleneck(features)
        x = self.conv2(self.norm2(x))
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    """Dense layers (denselayer1..N), each fed every earlier output; returns them all concatenated."""

    def __init__(
        self,
        num_layers: int,
        in_chs: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(in_chs + i * growth_rate, growth_rate, bn_size, drop_rate, memory_efficient)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseTransition(nn.Sequential):
    """Between dense blocks: batch norm, ReLU, a 1x1 conv halving the width, and 2x downsampling."""

    def __init__(self, in_chs: int, out_chs: int, blur: bool = False) -> None:
        super().__init__()
        self.add_module("norm", BatchNormAct2d(in_chs))
        self.add_module("conv", nn.Conv2d(in_chs, out_chs, kernel_size=1, bias=False))
        self.add_module("pool", BlurPool2d(out_chs, stride=2) if blur else nn.AvgPool2d(kernel_size=2, stride=2))


def _stem(in_chans: int, growth_rate: int, stem_type: str, blur: bool) -> tuple[OrderedDict[str, nn.Module], str]:
    """The stem's modules (conv0, norm0, ... pool0) and the name of the module its tap reads."""
    width = 2 * growth_rate
    pool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    if blur:
        pool = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1), BlurPool2d(width, stride=2))
    if not stem_type:
        mods: list[tuple[str, nn.Module]] = [
            ("conv0", nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", BatchNormAct2d(width)),
        ]
    else:
        chs1 = chs2 = growth_rate
        if "tiered" in stem_type:
            chs1 = 3 * (growth_rate // 4)
            chs2 = width if "narrow" in stem_type else 6 * (growth_rate // 4)
        mods = [
            ("conv0", nn.Conv2d(in_chans, chs1, 3, stride=2, padding=1, bias=False)),
            ("norm0", BatchNormAct2d(chs1)),
            ("conv1", nn.Conv2d(chs1, chs2, 3, padding=1, bias=False)),
            ("norm1", BatchNormAct2d(chs2)),
            ("conv2", nn.Conv2d(chs2, width, 3, padding=1, bias=False)),
            ("norm2", BatchNormAct2d(width)),
        ]
    return OrderedDict([*mods, ("pool0", pool)]), mods[-1][0]


def _init_weights(model: DenseNet, *, fresh: bool) -> None:
    """DenseNet's init, on construction (fresh=False: over torch's defaults) and one-pass creation (fresh: every
    tensor once): convolutions Kaiming-normal (fan-in), the classifier's bias zero, the rest torch's default
    (batch norms: unit scale, zero shift)."""

    def rule(m: nn.Module) -> bool:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            if fresh:
                default_bias_(m)
            return True
        if isinstance(m, nn.Linear):
            if fresh:
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))  # torch's default for the weight
            nn.init.zeros_(m.bias)
            return True
        return False

    init_each_module(model, rule, fresh=fresh)


class DenseNet(ZooModule):
    """Densely connected convolutional network, by growth rate, block depths, stem and pooling style."""

    classifier_name = "classifier"

    def __init__(
        self,
        *,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        bn_size: int = 4,
        stem_type: str = "",
        aa_layer: str | None = None,
        aa_stem_only: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        growth_rate = check_int("growth_rate", growth_rate, ge=1)
        blocks = check_ints("block_config", block_config, ge=1)
        if not blocks:
            raise InvalidValueError(f"block_config={block_config!r} is invalid: expected at least one block depth")
        in_chans = check_int("in_chans", in_chans, ge=1)
        bn_size = check_int("bn_size", bn_size, ge=1)
        check_choice("stem_type", stem_type, STEM_TYPES)
        if "tiered" in stem_type and growth_rate < 4:
            raise InvalidValueError(f"growth_rate={growth_rate} is invalid with stem_type={stem_type!r}: expected >= 4")
        check_choice("aa_layer", aa_layer, AA_LAYERS)
        check_bool("aa_stem_only", aa_stem_only)
        self.drop_rate = check_float("drop_rate", drop_rate, ge=0.0, lt=1.0)
        proj_drop_rate = check_float("proj_drop_rate", proj_drop_rate, ge=0.0, lt=1.0)
        check_bool("memory_efficient", memory_efficient)
        check_head(num_classes, global_pool)
        global_pool_module = GlobalPool(global_pool)
        self.num_classes = num_classes

        blur = aa_layer == "blur"
        stem, stem_tap = _stem(in_chans, growth_rate, stem_type, blur)
        self.features = nn.Sequential(stem)
        width = 2 * growth_rate
        self.feature_info = [FeatureInfo(index=0, module=f"features.{stem_tap}", num_chs=width, reduction=2)]
        reduction = 4
        for i, depth in enumerate(blocks):
            block = DenseBlock(depth, width, growth_rate, bn_size, proj_drop_rate, memory_efficient)
            self.features.add_module(f"denseblock{i + 1}", block)
            width += depth * growth_rate
            if i == len(blocks) - 1:
                break
            self.feature_info.append(
                FeatureInfo(index=i + 1, module=f"features.denseblock{i + 1}", num_chs=width, reduction=reduction)
            )
            reduction *= 2
            self.features.add_module(
                f"transition{i + 1}", DenseTransition(width, width // 2, blur and not aa_stem_only)
            )
            width //= 2
        self.features.add_module("norm5", BatchNormAct2d(width))
        self.feature_info.append(
            FeatureInfo(index=len(blocks), module="features.norm5", num_chs=width, reduction=reduction)
        )

        self.num_features = width
        self.global_pool = global_pool_module
        self.head_hidden_size = width * global_pool_module.feat_mult()
        self.head_drop = nn.Dropout(self.drop_rate)
        self.classifier: nn.Module = make_fc(self.head_hidden_size, num_classes)
        _init_weights(self, fresh=False)

    def init_all_weights(self) -> None:
        """Every tensor once, by the family's rules (_init_weights)."""
        _init_weights(self, fresh=True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each dense layer's bottleneck in backward instead of keeping it (memory_efficient)."""
        check_bool("enable", enable)
        for m in self.modules():
            if isinstance(m, DenseLayer):
                m.grad_checkpointing = enable

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The stem, then each dense layer, a transition with the one before (each block with coarse); the head last."""
        stem = r"^features\.conv[012]|features\.norm[012]|features\.pool[012]"
        if coarse:
            return GroupMatcher.of(stem=stem, blocks=r"^features\.(?:denseblock|transition)(\d+)")
        return GroupMatcher.of(
            stem=stem,
            blocks=(
                GroupRule(r"^features\.denseblock(\d+)\.denselayer(\d+)"),
                GroupRule(r"^features\.transition(\d+)", joins_previous=True),  # with its block's last layer
            ),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm's output: the last block's maps at stride 32."""
        out: torch.Tensor = self.features(x)
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify; pre_logits stops before the classifier."""
        x = self.head_drop(self.global_pool(x))
        if pre_logits:
            return x
        out: torch.Tensor = self.classifier(x)
        return out

    def _tap_steps(self) -> list[TapStep]:
        return sequential_steps(self.features, [t.module.removeprefix("features.") for t in self.feature_info])

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep only the modules the taps at indices need (and drop the head); returns the kept indices.

        prune_norm changes nothing here: the final norm is itself the last tap.
        """
        kept = take_taps(self.feature_info, indices)
        check_bool("prune_norm", prune_norm)
        check_bool("prune_head", prune_head)
        last = self.feature_info[max(kept)]
        if last.index < len(self.feature_info) - 1:
            names = [name for name, _ in self.features.named_children()]
            end = names.index(last.module.removeprefix("features.")) + 1
            self.features = sequential_prefix(self.features, end)
            self.feature_info = self.feature_info[: last.index + 1]
            self.num_features = last.num_chs
            prune_head = True  # the classifier was sized for the dropped stages
        if prune_head:
            self.reset_classifier(0, "")
        return list(kept)


_ARCHS: dict[str, dict[str, object]] = {
    "densenet121": {"growth_rate": 32, "block_config": (6, 12, 24, 16)},
    "densenetblur121d": {"growth_rate": 32, "block_config": (6, 12, 24, 16), "stem_type": "deep", "aa_layer": "blur"},
    "densenet121d": {"growth_rate": 32, "block_config": (6, 12, 24, 16), "stem_type": "deep"},
    "densenet169": {"growth_rate": 32, "block_config": (6, 12, 32, 32)},
    "densenet201": {"growth_rate": 32, "block_config": (6, 12, 48, 32)},
    "densenet161": {"growth_rate": 48, "block_config": (6, 12, 36, 24)},
    "densenet264": {"growth_rate": 48, "block_config": (6, 12, 64, 48)},
    "densenet264d": {"growth_rate": 48, "block_config": (6, 12, 64, 48), "stem_type": "deep"},
}

MODEL_SPECS: tuple[ModelSpec, ...] = family_specs(
    __name__, DenseNet, _ARCHS, FeatureCfg(feature_cls="list", flatten_sequential=True)
)
