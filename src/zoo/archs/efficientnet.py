"""EfficientNet and its relatives: stem, stages of mobile inverted-bottleneck blocks, head conv, classifier.

One class builds EfficientNet B0-B8/L2 (and their TF ports), -Lite, -EdgeTPU, -V2, MobileNet V1/V2,
MnasNet, FBNet-C, SPNASNet, MixNet and TinyNet from block-string definitions (efficientnet_archs).
Parameter names and shapes follow timm 1.0.31 for the same model names, so published checkpoints for
those names load unchanged. The B1-B3 pruned names are the unpruned architecture (with TensorFlow's
batch-norm eps and 'same' padding, as they were trained) rebuilt by the Pruner at the published channel
layouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs, pruned_layout
from zoo.archs.efficientnet_archs import ARCHS, EFFICIENTNET_STAGES
from zoo.archs.layers import (
    ACT_LAYERS,
    GlobalPool,
    check_head,
    is_scripting,
    make_fc,
    sequential_prefix,
)
from zoo.archs.layers.block_norms import BLOCK_NORMS, make_block_norm
from zoo.archs.layers.helpers import OUTPUT_STRIDES
from zoo.archs.layers.init import init_each_module
from zoo.archs.layers.mbconv import (
    KERNELS,
    BlockDef,
    Scaling,
    SeCfg,
    build_body,
    check_stages,
    google_init_,
    stage_steps,
    tap_stage,
)
from zoo.archs.layers.padding import create_conv2d
from zoo.archs.surface import TapStep, checkpoint_call, take_taps
from zoo.domain.checks import check_bool, check_choice, check_float, check_int
from zoo.domain.grouping import GroupMatcher, GroupRule
from zoo.domain.values import FeatureCfg, ModelSpec

__all__ = ["EFFICIENTNET_STAGES", "HEAD_SCALINGS", "MODEL_SPECS", "PRUNED_NAMES", "EfficientNet"]

# how num_features becomes the head conv's width: scaled as the blocks are, as given, or the larger of both
HEAD_SCALINGS: tuple[str, ...] = ("scale", "fixed", "grow")


def _head_width(chs: int, rule: str, scaling: Scaling) -> int:
    if rule == "fixed":
        return chs
    scaled = scaling.width(chs)
    return max(chs, scaled) if rule == "grow" else scaled


class EfficientNet(ZooModule):
    """EfficientNet: conv_stem + bn1, block stages, conv_head + bn2 (1x1 to num_features), pooling, classifier.

    Widths scale by channel_multiplier (rounded to multiples of channel_divisor within round_limit), depths by
    depth_multiplier (one, or one per stage; rounded up, or to the nearest with depth_trunc='round');
    fix_first_last / fix_stem keep the end stages' depths / the stem's width (layers.mbconv.Scaling).
    num_features is scaled, kept or grown to the scaled width by head_scaling; 0 builds no head conv.
    se_layer 'gc' gates by global context instead of SE; norm_layer picks the blocks' norm (batch norm, or the
    group/layer/EvoNorm forms of the reference's test models). same_pad pads stride-2 convolutions as
    TensorFlow does (for the TF-trained checkpoints). output_stride 16 or 8 keeps the last maps at that stride,
    the stages past it dilating instead of striding (a dense-prediction backbone).
    forward_intermediates' norm=True passes the last tap through the head conv + bn2, as forward_features does.
    set_grad_checkpointing recomputes each block's activations in backward. Random weights are drawn as
    TensorFlow's reference does (layers.mbconv.google_init_), as timm's are.
    """

    classifier_name = "classifier"

    def __init__(
        self,
        *,
        stages: Sequence[Sequence[BlockDef]],
        channel_multiplier: float = 1.0,
        depth_multiplier: float | Sequence[float] = 1.0,
        channel_divisor: int = 8,
        round_limit: float = 0.9,
        depth_trunc: str = "ceil",
        fix_first_last: bool = False,
        fix_stem: bool = False,
        stem_size: int = 32,
        stem_kernel_size: int = 3,
        num_features: int = 1280,
        head_scaling: str = "scale",
        num_classes: int = 1000,
        in_chans: int = 3,
        act_layer: str = "silu",
        se_layer: str = "se",
        norm_layer: str = "batchnorm",
        bn_eps: float = 1e-5,
        same_pad: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        defs = check_stages(stages)
        scaling = Scaling(
            channel_multiplier, depth_multiplier, channel_divisor, round_limit, depth_trunc, fix_first_last, fix_stem
        )
        stem_size = check_int("stem_size", stem_size, ge=1)
        check_choice("stem_kernel_size", stem_kernel_size, KERNELS)
        head_chs = check_int("num_features", num_features, ge=0)
        check_choice("head_scaling", head_scaling, HEAD_SCALINGS)
        check_choice("norm_layer", norm_layer, BLOCK_NORMS)
        in_chans = check_int("in_chans", in_chans, ge=1)
        check_choice("act_layer", act_layer, ACT_LAYERS)
        eps = check_float("bn_eps", bn_eps, ge=0.0, lt=1.0)
        same_pad = check_bool("same_pad", same_pad)
        self.drop_rate = check_float("drop_rate", drop_rate, ge=0.0, lt=1.0)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, ge=0.0, lt=1.0)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        check_head(num_classes, global_pool)
        pool = GlobalPool(global_pool)  # refuses an unknown pooling before anything is built

        self.num_classes = num_classes
        self.grad_checkpointing = False
        body = build_body(
            defs,
            in_chans,
            stem_size,
            scaling=scaling,
            act=act_layer,
            se=SeCfg(layer=se_layer),
            drop_path_rate=drop_path_rate,
            bn_eps=eps,
            same_pad=same_pad,
            stem_kernel=stem_kernel_size,
            norm_layer=norm_layer,
            output_stride=output_stride,
        )
        self.conv_stem = body.conv_stem
        self.bn1 = body.bn1
        self.blocks = body.stages.blocks
        self.feature_info = body.stages.feature_info
        self.conv_head: nn.Module = nn.Identity()
        self.bn2: nn.Module = nn.Identity()
        self.num_features = body.stages.out_chs
        if head_chs:
            self.num_features = _head_width(head_chs, head_scaling, scaling)
            self.conv_head = create_conv2d(body.stages.out_chs, self.num_features, 1, same_pad=same_pad)
            self.bn2 = make_block_norm(norm_layer, self.num_features, eps, act_layer=act_layer)
        self.global_pool = pool
        self.head_hidden_size = self.num_features * pool.feat_mult()
        self.classifier = make_fc(self.head_hidden_size, num_classes)
        init_each_module(self, google_init_, fresh=False)

    def init_all_weights(self) -> None:
        """Every tensor once: convolutions and linears by google_init_, the rest torch's default."""
        init_each_module(self, google_init_)

    @torch.jit.unused
    def _blocks_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.blocks:
            for block in cast(nn.Sequential, stage):
                x = checkpoint_call(block, block, x)
        return x

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The stem, then each block (each stage with coarse), conv_head and bn2 with the last; the classifier last."""
        blocks = r"^blocks\.(\d+)" if coarse else r"^blocks\.(\d+)\.(\d+)"
        return GroupMatcher.of(
            stem=r"^conv_stem|bn1", blocks=(GroupRule(blocks), GroupRule(r"conv_head|bn2", joins_previous=True))
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head conv's normalised, activated output (num_features channels, stride 32)."""
        x = self.bn1(self.conv_stem(x))
        # is_scripting() must stand in the if itself: TorchScript then drops the branch it cannot compile
        if self.grad_checkpointing and not is_scripting():  # noqa: SIM108  # a ternary would not be dropped
            x = self._blocks_checkpointed(x)
        else:
            x = self.blocks(x)
        return self._finish(x)  # forward_intermediates ends the same way

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify; pre_logits stops before the classifier."""
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        if pre_logits:
            return x
        out: torch.Tensor = self.classifier(x)
        return out

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn2(self.conv_head(x))
        return out

    def _tap_stages(self) -> list[int]:
        # the stem's tap (bn1, where the first block strides or folds space) is stage -1
        return [tap_stage(t) for t in self.feature_info]

    def _tap_steps(self) -> list[TapStep]:
        return stage_steps([self.conv_stem, self.bn1], self.blocks, self._tap_stages(), self.grad_checkpointing)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep only the stages the taps at indices need; returns the kept indices.

        prune_head drops the head conv (and its norm) with the classifier, as does any cut before the last tap:
        forward then returns the last kept tap's map. prune_norm changes nothing (the only final norm is the
        head conv's).
        """
        kept = take_taps(self.feature_info, indices)
        check_bool("prune_norm", prune_norm)
        check_bool("prune_head", prune_head)
        last = max(kept)
        if last < len(self.feature_info) - 1:
            self.blocks = sequential_prefix(self.blocks, self._tap_stages()[last] + 1)
            self.feature_info = self.feature_info[: last + 1]
            prune_head = True  # the head conv was sized for the dropped stages
        if prune_head:
            self.conv_head = nn.Identity()
            self.bn2 = nn.Identity()
            self.num_features = self.feature_info[-1].num_chs
            self.reset_classifier(0, "")
        return list(kept)


# the names published as pruned channel layouts: B1-B3 (the '_pruned' edge names were published unpruned)
PRUNED_NAMES: tuple[str, ...] = tuple(n for n in ARCHS if n.startswith("efficientnet_b") and n.endswith("_pruned"))

MODEL_SPECS: tuple[ModelSpec, ...] = tuple(
    attrs.evolve(spec, prune_spec=pruned_layout(spec.name)) if spec.name in PRUNED_NAMES else spec
    for spec in family_specs(__name__, EfficientNet, ARCHS, FeatureCfg(feature_cls="list"))
)
