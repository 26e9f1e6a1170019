"""Aligned Xception (41/65/71) and its pre-activation variants (41p/65p), with dilation for output_stride 8/16.

Parameter names and shapes follow timm 1.0.31 for the same model names, so published checkpoints for
those names load unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import cast

import attrs
import torch
from torch import nn

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs
from zoo.archs.layers import (
    BatchNormAct2d,
    ClassifierHead,
    ConvNormAct,
    DropPath,
    GlobalPool,
    check_head,
    get_padding,
    is_scripting,
    sequential_prefix,
)
from zoo.archs.layers.helpers import OUTPUT_STRIDES
from zoo.archs.layers.init import init_each_module
from zoo.archs.surface import TapStep, checkpoint_call, take_taps
from zoo.domain.checks import check_bool, check_choice, check_float, check_int, check_ints
from zoo.domain.errors import InvalidValueError
from zoo.domain.grouping import GroupMatcher
from zoo.domain.values import FeatureCfg, FeatureInfo, ModelSpec

__all__ = ["MODEL_SPECS", "OUTPUT_STRIDES", "BlockCfg", "XceptionAligned", "XceptionBlock"]


@attrs.frozen
class BlockCfg:
    """One Xception block: input width, the three separable convs' widths, stride and residual style."""

    in_chs: int
    out_chs: tuple[int, int, int]
    stride: int = 1
    no_skip: bool = False
    start_with_relu: bool = True

    def __attrs_post_init__(self) -> None:
        check_int("BlockCfg.in_chs", self.in_chs, ge=1)
        check_ints("BlockCfg.out_chs", self.out_chs, length=3, ge=1)
        check_choice("BlockCfg.stride", self.stride, (1, 2))
        check_bool("BlockCfg.no_skip", self.no_skip)
        check_bool("BlockCfg.start_with_relu", self.start_with_relu)


def _depthwise(chs: int, stride: int, dilation: int) -> nn.Conv2d:
    """The 3x3 depthwise convolution of a separable conv, padded to keep the size at stride 1."""
    return nn.Conv2d(chs, chs, 3, stride, get_padding(3, stride, dilation), dilation, groups=chs, bias=False)


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 convolution, each followed by batch norm (and ReLU when act)."""

    def __init__(
        self, in_chs: int, out_chs: int, stride: int, dilation: int, *, act: bool, eps: float, momentum: float
    ) -> None:
        super().__init__()
        self.conv_dw = _depthwise(in_chs, stride, dilation)
        self.bn_dw = BatchNormAct2d(in_chs, eps, momentum, apply_act=act)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn_pw = BatchNormAct2d(out_chs, eps, momentum, apply_act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn_pw(self.conv_pw(self.bn_dw(self.conv_dw(x))))
        return out


class PreSeparableConv2d(nn.Module):
    """Pre-activation separable convolution: (batch norm + ReLU), depthwise 3x3, pointwise 1x1."""

    def __init__(
        self, in_chs: int, out_chs: int, stride: int, dilation: int, *, first_act: bool, eps: float, momentum: float
    ) -> None:
        super().__init__()
        self.norm: nn.Module = BatchNormAct2d(in_chs, eps, momentum) if first_act else nn.Identity()
        self.conv_dw = _depthwise(in_chs, stride, dilation)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv_pw(self.conv_dw(self.norm(x)))
        return out


class XceptionBlock(nn.Module):
    """Three separable convolutions (the last one strided) with a residual, post- or pre-activation.

    tap_at is how many of `stack`'s modules produce the block's feature tap: the input to the strided conv.
    """

    def __init__(
        self,
        cfg: BlockCfg,
        dilation: int,
        *,
        preact: bool,
        drop_path_rate: float,
        eps: float,
        momentum: float,
    ) -> None:
        super().__init__()
        in_chs, out_chs, stride = cfg.in_chs, cfg.out_chs[-1], cfg.stride
        needs_projection = not cfg.no_skip and (out_chs != in_chs or stride != 1)
        self.no_skip = cfg.no_skip
        self.out_channels = out_chs
        self.shortcut: nn.Module | None = None
        if needs_projection:
            self.shortcut = (
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)
                if preact
                else ConvNormAct(in_chs, out_chs, 1, stride, apply_act=False, eps=eps, momentum=momentum)
            )
        # pre-activation normalises the block input once, for both the stack and the shortcut
        self.norm: nn.Module = BatchNormAct2d(in_chs, eps, momentum) if preact else nn.Identity()
        self.stack = nn.Sequential()
        width = in_chs
        for i, chs in enumerate(cfg.out_chs):
            conv_stride = stride if i == 2 else 1
            conv: nn.Module
            if preact:
                conv = PreSeparableConv2d(
                    width, chs, conv_stride, dilation, first_act=i > 0, eps=eps, momentum=momentum
                )
            else:
                if cfg.start_with_relu:
                    # the first ReLU must not overwrite the block input: the shortcut still reads it
                    self.stack.add_module(f"act{i + 1}", nn.ReLU(inplace=i > 0))
                act = not cfg.start_with_relu
                conv = SeparableConv2d(width, chs, conv_stride, dilation, act=act, eps=eps, momentum=momentum)
            self.stack.add_module(f"conv{i + 1}", conv)
            width = chs
        self.tap_at = 2 if preact else 5
        self.drop_path: nn.Module = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()
        self.tap_only = False

    def _merge(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.no_skip:
            return x
        x = self.drop_path(x)
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        return x + skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.tap_only:
            out: torch.Tensor = self.stack(x)
            return out
        return self._merge(x, self.stack(x))

    def forward_with_tap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the block's output, its feature tap: the input to the strided separable conv)."""
        x = self.norm(x)
        y = tap = x
        for i, m in enumerate(self.stack):
            y = m(y)
            if i == self.tap_at - 1:
                tap = y
        if self.tap_only:
            return y, tap
        return self._merge(x, y), tap

    def cut_at_tap(self) -> XceptionBlock:
        """A copy sharing this block's weights that ends at the tap, without its residual; this one is unchanged."""
        clone = copy.copy(self)
        # copy.copy shares the module tables: the clone gets its own, so replacing its children leaves self alone
        for table in ("_modules", "_parameters", "_buffers"):
            object.__setattr__(clone, table, dict(getattr(self, table)))
        clone.stack = sequential_prefix(self.stack, self.tap_at)
        clone.shortcut = None
        clone.drop_path = nn.Identity()
        clone.tap_only = True
        return clone


def _no_rule(module: nn.Module) -> bool:
    return False


class XceptionAligned(ZooModule):
    """Aligned Xception: a two-conv stem, then Xception blocks; dilation replaces striding past output_stride.

    set_grad_checkpointing recomputes each block's activations in backward. Its init is torch's
    defaults alone, so one-pass creation has no double work to save; it opts in for the random fills
    running on torch's threads (see zoo.services.parallel_init).
    """

    classifier_name = "head.fc"

    def __init__(
        self,
        *,
        block_cfg: Sequence[BlockCfg],
        num_classes: int = 1000,
        in_chans: int = 3,
        output_stride: int = 32,
        preact: bool = False,
        bn_eps: float = 1e-5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if not block_cfg or not all(isinstance(b, BlockCfg) for b in block_cfg):
            raise InvalidValueError(f"block_cfg={block_cfg!r} is invalid: expected a non-empty sequence of BlockCfg")
        widths = [64] + [b.out_chs[-1] for b in block_cfg[:-1]]  # the stem gives 64 channels
        chained = [b.in_chs for b in block_cfg] == widths
        if not chained:
            raise InvalidValueError(
                f"block_cfg is invalid: each block's in_chs must be the previous block's last width (64 for the "
                f"first), expected in_chs {widths}, got {[b.in_chs for b in block_cfg]}"
            )
        in_chans = check_int("in_chans", in_chans, ge=1)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        check_bool("preact", preact)
        eps = check_float("bn_eps", bn_eps, ge=0.0, lt=1.0)
        drop_rate = check_float("drop_rate", drop_rate, ge=0.0, lt=1.0)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, ge=0.0, lt=1.0)
        check_head(num_classes, global_pool)
        GlobalPool(global_pool)  # refuses an unknown pooling before anything is built
        self.num_classes = num_classes
        self.grad_checkpointing = False
        momentum = 0.1

        stem_conv: nn.Module = (
            nn.Conv2d(32, 64, 3, padding=1, bias=False)
            if preact
            else ConvNormAct(32, 64, 3, eps=eps, momentum=momentum)
        )
        self.stem = nn.Sequential(ConvNormAct(in_chans, 32, 3, stride=2, eps=eps, momentum=momentum), stem_conv)

        self.feature_info = []
        self.blocks = nn.Sequential()
        dilation, reduction = 1, 2
        for i, b in enumerate(block_cfg):
            stride = b.stride
            if stride > 1:
                tap = f"blocks.{i}.stack.conv2" if preact else f"blocks.{i}.stack.act3"
                self.feature_info.append(
                    FeatureInfo(index=len(self.feature_info), module=tap, num_chs=b.out_chs[-2], reduction=reduction)
                )
            block_dilation = dilation
            if stride > 1 and reduction * stride > output_stride:
                dilation *= stride
                stride = 1
            else:
                reduction *= stride
            rate = drop_path_rate * i / max(len(block_cfg) - 1, 1)
            block = XceptionBlock(
                attrs.evolve(b, stride=stride),
                block_dilation,
                preact=preact,
                drop_path_rate=rate,
                eps=eps,
                momentum=momentum,
            )
            self.blocks.add_module(str(i), block)
        last = len(block_cfg) - 1
        self.num_features = block_cfg[-1].out_chs[-1]
        self.feature_info.append(
            FeatureInfo(
                index=len(self.feature_info), module=f"blocks.{last}", num_chs=self.num_features, reduction=reduction
            )
        )
        # not in place: the hook extractor's last tap is this module's input, which must survive it
        self.act: nn.Module = nn.ReLU() if preact else nn.Identity()
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, drop_rate)
        self.head_hidden_size = self.head.num_features

    def init_all_weights(self) -> None:
        """Every tensor once, with torch's default init (the family has no rule of its own)."""
        init_each_module(self, _no_rule)

    @torch.jit.unused
    def _blocks_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = checkpoint_call(block, block, x)
        return x

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The stem, then each block (coarse or not: a block is a stage here); the head last."""
        return GroupMatcher.of(stem=r"^stem", blocks=r"^blocks\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output (after the final ReLU for pre-activation models)."""
        x = self.stem(x)
        # is_scripting() must stand in the if itself: TorchScript then drops the branch it cannot compile
        if self.grad_checkpointing and not is_scripting():  # noqa: SIM108  # a ternary would not be dropped
            x = self._blocks_checkpointed(x)
        else:
            x = self.blocks(x)
        return self._finish(x)  # forward_intermediates ends the same way

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify; pre_logits stops before the classifier."""
        out: torch.Tensor = self.head(x, pre_logits=pre_logits)
        return out

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(x)
        return out

    def _block(self, i: int) -> XceptionBlock:
        return cast(XceptionBlock, self.blocks[i])

    def _tap_blocks(self) -> list[int]:
        return [int(t.module.split(".")[1]) for t in self.feature_info]

    def _run_to_tap(self, start: int, end: int, mid_block: bool, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if start == 0:
            x = self.stem(x)
        for i in range(start, end + 1):
            block = self._block(i)
            if i == end and mid_block:
                if self.grad_checkpointing:
                    return checkpoint_call(block, block.forward_with_tap, x)
                out: tuple[torch.Tensor, torch.Tensor] = block.forward_with_tap(x)
                return out
            x = checkpoint_call(block, block, x) if self.grad_checkpointing else block(x)
        return x, x

    def _tap_steps(self) -> list[TapStep]:
        steps: list[TapStep] = []
        start = 0
        for t, end in zip(self.feature_info, self._tap_blocks(), strict=True):
            mid_block = t.module != f"blocks.{end}"

            def step(
                x: torch.Tensor, s: int = start, e: int = end, m: bool = mid_block
            ) -> tuple[torch.Tensor, torch.Tensor]:
                return self._run_to_tap(s, e, m, x)

            steps.append(step)
            start = end + 1
        return steps

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep only the blocks the taps at indices need (and drop the head); returns the kept indices.

        A tap inside a block ends the network there. prune_norm drops the pre-activation models' final ReLU.
        """
        kept = take_taps(self.feature_info, indices)
        check_bool("prune_norm", prune_norm)
        check_bool("prune_head", prune_head)
        last = max(kept)
        if last < len(self.feature_info) - 1:
            end = self._tap_blocks()[last]
            blocks = sequential_prefix(self.blocks, end + 1)
            blocks[end] = self._block(end).cut_at_tap()
            self.blocks = blocks
            self.feature_info = self.feature_info[: last + 1]
            self.num_features = self.feature_info[last].num_chs
            self.act = nn.Identity()
            prune_head = True  # the classifier was sized for the dropped blocks
        if prune_norm:
            self.act = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return list(kept)


def _blocks(entry: Sequence[tuple[int, int, int]], middle: int) -> tuple[BlockCfg, ...]:
    """Entry flow (in, out, stride per block), `middle` 728-wide blocks, and the common exit flow."""
    return (
        *(BlockCfg(i, (o, o, o), s) for i, o, s in entry),
        *([BlockCfg(728, (728, 728, 728))] * middle),
        BlockCfg(728, (728, 1024, 1024), 2),
        BlockCfg(1024, (1536, 1536, 2048), 1, no_skip=True, start_with_relu=False),
    )


_ENTRY = ((64, 128, 2), (128, 256, 2), (256, 728, 2))
_ENTRY71 = ((64, 128, 2), (128, 256, 1), (256, 256, 2), (256, 728, 1), (728, 728, 2))
_TF_BN = {"bn_eps": 1e-3}
_ARCHS: dict[str, dict[str, object]] = {
    "xception41": {"block_cfg": _blocks(_ENTRY, 8), **_TF_BN},
    "xception65": {"block_cfg": _blocks(_ENTRY, 16), **_TF_BN},
    "xception71": {"block_cfg": _blocks(_ENTRY71, 16), **_TF_BN},
    "xception41p": {"block_cfg": _blocks(_ENTRY, 8), "preact": True},
    "xception65p": {"block_cfg": _blocks(_ENTRY, 16), "preact": True, **_TF_BN},
}

MODEL_SPECS: tuple[ModelSpec, ...] = family_specs(
    __name__, XceptionAligned, _ARCHS, FeatureCfg(feature_cls="hook", flatten_sequential=True)
)
