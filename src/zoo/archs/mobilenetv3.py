"""MobileNetV3 and its relatives (LCNet, FBNetV3): inverted-bottleneck stages and a conv head after pooling.

Parameter names and shapes follow timm 1.0.31 for the same model names, so published checkpoints for them
load unchanged. The architectures' definitions are in mobilenetv3_archs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs
from zoo.archs.layers import (
    AA_LAYERS,
    ACT_LAYERS,
    BatchNormAct2d,
    GlobalPool,
    check_head,
    is_scripting,
    make_act,
    make_fc,
    sequential_prefix,
)
from zoo.archs.layers.helpers import OUTPUT_STRIDES
from zoo.archs.layers.init import init_each_module
from zoo.archs.layers.mbconv import (
    BlockDef,
    Scaling,
    SeCfg,
    build_body,
    check_stages,
    google_init_,
    stage_steps,
    tap_stage,
)
from zoo.archs.mobilenetv3_archs import ARCHS, MOBILENETV3_LARGE_STAGES
from zoo.archs.surface import TapStep, checkpoint_call, take_taps
from zoo.domain.checks import check_bool, check_choice, check_float, check_int
from zoo.domain.grouping import GroupMatcher
from zoo.domain.values import FeatureCfg, ModelSpec

__all__ = ["MOBILENETV3_LARGE_STAGES", "MODEL_SPECS", "MobileNetV3"]


class MobileNetV3(ZooModule):
    """MobileNetV3: conv_stem + bn1, block stages (ending in a 1x1 conv to num_features), then the head:
    global pooling, conv_head (1x1, to head_size) + activation (head_norm: a batch norm + activation,
    norm_head), dropout, classifier.

    head_hidden_size is conv_head's width (the pre-logits), num_features the last stage's. With global_pool=''
    the head keeps the unpooled map and skips conv_head (a per-pixel head conv is no pooled feature).
    Squeeze-and-excitation is sized from the expanded width (se_from_exp) or the block input, rounded to a
    multiple of 8 (se_round) or to the nearest integer, with se_act inside (None: the block's activation)
    and a hard-sigmoid gate. same_pad pads strided convs as TensorFlow's 'same' does (the tf_ ports).
    MobileNetV4's universal inverted residuals take a layer scale (layer_scale_init_value, None: none) and
    anti-aliased striding (aa_layer). output_stride 16 or 8 keeps the last maps at that stride, the stages
    past it dilating instead of striding.
    set_grad_checkpointing recomputes each block's activations in backward. Random weights are drawn as
    TensorFlow's reference does (layers.mbconv.google_init_), as timm's are.
    """

    classifier_name = "classifier"

    def __init__(
        self,
        *,
        stages: Sequence[Sequence[BlockDef]],
        channel_multiplier: float = 1.0,
        depth_multiplier: float = 1.0,
        round_limit: float = 0.9,
        fix_stem: bool = False,
        stem_size: int = 16,
        head_size: int = 1280,
        head_bias: bool = True,
        head_norm: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        act_layer: str = "hard_swish",
        se_from_exp: bool = True,
        se_round: bool = True,
        se_act: str | None = "relu",
        bn_eps: float = 1e-5,
        same_pad: bool = False,
        layer_scale_init_value: float | None = None,
        aa_layer: str | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        defs = check_stages(stages)
        scaling = Scaling(
            channel_multiplier=channel_multiplier,
            depth_multiplier=depth_multiplier,
            round_limit=round_limit,
            fix_stem=fix_stem,
        )
        stem_size = check_int("stem_size", stem_size, ge=1)
        head_size = check_int("head_size", head_size, ge=1)
        head_bias = check_bool("head_bias", head_bias)
        head_norm = check_bool("head_norm", head_norm)
        in_chans = check_int("in_chans", in_chans, ge=1)
        check_choice("act_layer", act_layer, ACT_LAYERS)
        check_bool("se_from_exp", se_from_exp)
        check_bool("se_round", se_round)
        if se_act is not None:
            check_choice("se_act", se_act, ACT_LAYERS)
        eps = check_float("bn_eps", bn_eps, ge=0.0, lt=1.0)
        same_pad = check_bool("same_pad", same_pad)
        if layer_scale_init_value is not None:
            check_float("layer_scale_init_value", layer_scale_init_value, ge=0.0, le=1.0)
        if aa_layer is not None:
            check_choice("aa_layer", aa_layer, AA_LAYERS)
        self.drop_rate = check_float("drop_rate", drop_rate, ge=0.0, lt=1.0)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, ge=0.0, lt=1.0)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        check_head(num_classes, global_pool)
        pool = GlobalPool(global_pool, flatten=False)  # refuses an unknown pooling before anything is built

        self.num_classes = num_classes
        self.grad_checkpointing = False
        body = build_body(
            defs,
            in_chans,
            stem_size,
            scaling=scaling,
            act=act_layer,
            se=SeCfg(
                from_exp=se_from_exp,
                round_to=8 if se_round else 0,
                act=se_act,
                gate="hard_sigmoid",
                round_limit=scaling.round_limit,
            ),
            drop_path_rate=drop_path_rate,
            bn_eps=eps,
            same_pad=same_pad,
            layer_scale=layer_scale_init_value,
            aa_layer=aa_layer,
            output_stride=output_stride,
        )
        self.conv_stem = body.conv_stem
        self.bn1 = body.bn1
        self.blocks = body.stages.blocks
        self.feature_info = body.stages.feature_info
        self.num_features = body.stages.out_chs
        self.global_pool = pool
        # with head_norm the head conv never has a bias: the norm's shift stands in for it
        head_bias = head_bias and not head_norm
        self.conv_head: nn.Module = nn.Conv2d(self.num_features * pool.feat_mult(), head_size, 1, bias=head_bias)
        self.norm_head: nn.Module = BatchNormAct2d(head_size, eps, act_layer=act_layer) if head_norm else nn.Identity()
        self.act2 = nn.Identity() if head_norm else make_act(act_layer)
        self.use_conv_head = global_pool != ""  # with the map unpooled (or conv_head pruned) the head skips it
        self.head_hidden_size = self._head_width(pool)
        self.classifier = make_fc(self.head_hidden_size, num_classes)
        init_each_module(self, google_init_, fresh=False)

    def _head_width(self, pool: GlobalPool) -> int:
        if pool.pool_type != "" and isinstance(self.conv_head, nn.Conv2d):
            return self.conv_head.out_channels
        return self.num_features * pool.feat_mult()

    def init_all_weights(self) -> None:
        """Every tensor once: convolutions and linears by google_init_, the rest torch's default."""
        init_each_module(self, google_init_)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one (0: none); optionally change the pooling.

        A pooling of another width (catavgmax doubles it) needs a new conv_head: it is initialised afresh,
        with a warning, since its trained weights no longer fit.
        """
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        check_head(num_classes, pool_type)
        pool = GlobalPool(pool_type, flatten=False)
        pooled = self.num_features * pool.feat_mult()
        if pool_type != "" and isinstance(self.conv_head, nn.Conv2d) and self.conv_head.in_channels != pooled:
            warnings.warn(
                f"global_pool={pool_type!r} gives conv_head {pooled} input channels instead of "
                f"{self.conv_head.in_channels}: conv_head is re-initialised and its trained weights are dropped",
                stacklevel=2,
            )
            old = self.conv_head
            bias = old.bias is not None
            self.conv_head = nn.Conv2d(pooled, old.out_channels, 1, bias=bias, device=old.weight.device)
        self.global_pool = pool
        self.use_conv_head = pool_type != "" and isinstance(self.conv_head, nn.Conv2d)
        self.head_hidden_size = self._head_width(pool)
        self.classifier = make_fc(self.head_hidden_size, num_classes)
        self.num_classes = num_classes

    @torch.jit.unused
    def _blocks_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.blocks:
            for block in cast(nn.Sequential, stage):
                x = checkpoint_call(block, block, x)
        return x

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The stem, then each block (each stage with coarse); conv_head and the classifier last."""
        return GroupMatcher.of(stem=r"^conv_stem|bn1", blocks=r"^blocks\.(\d+)" if coarse else r"^blocks\.(\d+)\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output (num_features channels, stride 32)."""
        x = self.bn1(self.conv_stem(x))
        # is_scripting() must stand in the if itself: TorchScript then drops the branch it cannot compile
        if self.grad_checkpointing and not is_scripting():
            return self._blocks_checkpointed(x)
        out: torch.Tensor = self.blocks(x)
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, conv_head + norm / activation, (pre_logits stops here) dropout and classify."""
        x = self.global_pool(x)
        if self.use_conv_head:
            x = self.act2(self.norm_head(self.conv_head(x)))
        if self.global_pool.pool_type != "":
            x = x.flatten(1)
        if pre_logits:
            return x
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        out: torch.Tensor = self.classifier(x)
        return out

    def _tap_steps(self) -> list[TapStep]:
        tap_stages = [tap_stage(t) for t in self.feature_info]
        return stage_steps([self.conv_stem, self.bn1], self.blocks, tap_stages, self.grad_checkpointing)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep only the stages the taps at indices need; returns the kept indices.

        prune_head drops conv_head (and norm_head) with the classifier (forward then returns the last kept tap's
        map), as does any cut before the last tap. The model has no final norm: prune_norm changes nothing.
        """
        kept = take_taps(self.feature_info, indices)
        check_bool("prune_norm", prune_norm)
        check_bool("prune_head", prune_head)
        last = max(kept)
        if last < len(self.feature_info) - 1:
            stage = tap_stage(self.feature_info[last])
            self.blocks = sequential_prefix(self.blocks, stage + 1)
            self.feature_info = self.feature_info[: last + 1]
            self.num_features = self.feature_info[-1].num_chs
            prune_head = True  # conv_head was sized for the dropped stages
        if prune_head:
            self.conv_head = nn.Identity()
            self.norm_head = nn.Identity()
            self.reset_classifier(0, "")
        return list(kept)


MODEL_SPECS: tuple[ModelSpec, ...] = family_specs(__name__, MobileNetV3, ARCHS, FeatureCfg(feature_cls="list"))
