"""Vision Transformer (ViT-Ti/S/B, patch 16): patch tokens, a class token and learned absolute position embeddings.

Parameter names and shapes follow timm 1.0.31 for the same model names, so published checkpoints for
those names load unchanged; a checkpoint made for another image size has its position embeddings
resampled to the model's grid on loading (checkpoint_filter).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from typing import ClassVar

import attrs
import torch
import torch.fx
from torch import nn

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs
from zoo.archs.layers import DropPath, init_each_module, is_scripting, sequential_prefix
from zoo.archs.layers.layer_scale import LayerScale
from zoo.archs.layers.mlp import Mlp
from zoo.archs.layers.patch_embed import PatchEmbed
from zoo.archs.layers.pos_embed import resample_abs_pos_embed
from zoo.archs.layers.self_attention import Attention
from zoo.archs.surface import TapStep, checkpoint_call, take_taps
from zoo.domain.checks import check_bool, check_choice, check_float, check_int, check_ints, is_int
from zoo.domain.errors import CheckpointMismatchError, InvalidValueError
from zoo.domain.grouping import GroupMatcher, GroupRule
from zoo.domain.values import FeatureCfg, FeatureInfo, ModelSpec

__all__ = [
    "GLOBAL_POOLS",
    "MODEL_SPECS",
    "OUTPUT_FORMATS",
    "Block",
    "VisionTransformer",
    "checkpoint_filter",
]

log = logging.getLogger("zoo.weights")

# 'token' is the class token; the others reduce the patch tokens; '' keeps the whole token sequence
GLOBAL_POOLS: tuple[str, ...] = ("token", "avg", "avgmax", "max", "")
# tap layouts: a map (channels first or last) over the patch grid, or the patch tokens as a sequence
OUTPUT_FORMATS: tuple[str, ...] = ("NCHW", "NHWC", "NLC")
_LN_EPS = 1e-6

# a leaf of torch.fx graphs: the resampling runs on the real grid size each time the traced graph runs
torch.fx.wrap("resample_abs_pos_embed")


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x)), each optionally layer-scaled."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        qkv_bias: bool,
        init_values: float | None,
        proj_drop: float,
        attn_drop: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.ls1: nn.Module = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path1: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.ls2: nn.Module = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path2: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        out: torch.Tensor = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return out


def _img_size(value: object, patch_size: int) -> tuple[int, int]:
    if is_int(value):
        side = check_int("img_size", value, ge=patch_size)
        return side, side
    h, w = check_ints("img_size", value, length=2, ge=patch_size)
    return h, w


def _check_pool(global_pool: object, num_classes: int, class_token: bool) -> str:
    """The pooling for a head of num_classes, or InvalidValueError (nothing is changed before this passes)."""
    if global_pool == "map":
        raise InvalidValueError(
            "global_pool='map' (attention pooling) is not available in zoo's VisionTransformer; "
            f"expected one of {', '.join(map(repr, GLOBAL_POOLS))}"
        )
    pool = str(check_choice("global_pool", global_pool, GLOBAL_POOLS))
    if pool == "token" and not class_token:
        raise InvalidValueError("global_pool='token' needs the class token (class_token=True); use 'avg' instead")
    if pool == "" and num_classes > 0:
        raise InvalidValueError(
            f"global_pool='' (the whole token sequence) needs num_classes=0, got num_classes={num_classes}; "
            f"use one of {', '.join(repr(p) for p in GLOBAL_POOLS if p)} to keep a classifier"
        )
    return pool


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        # timm's trunc_normal_(std=0.02) cuts at +-2 (absolute), 100 std out: the same as a plain normal_,
        # which takes half the time (this init is most of a large ViT's build time)
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class VisionTransformer(ZooModule):
    """ViT: patch embedding, [class token +] position embeddings, transformer blocks, final norm, pooled head.

    forward_features returns the normalised token sequence [B, prefix + patches, C]; the feature taps are
    the blocks, which forward_intermediates returns as maps over the patch grid (prefix tokens dropped).
    Built for one img_size (other input sizes are refused with InvalidValueError) unless dynamic_img_size,
    which resamples the position embeddings to each input's grid (and dynamic_img_pad pads inputs to whole
    patches). set_grad_checkpointing recomputes each block's activations in backward.
    Feature extractors: 'getter' only, since the blocks' outputs are token sequences, not maps.
    """

    # the feature extractor strategies whose outputs are this model's feature maps
    feature_classes: ClassVar[tuple[str, ...]] = ("getter",)
    global_pools: ClassVar[tuple[str, ...]] = GLOBAL_POOLS
    classifier_name = "head"
    # taps as maps over the patch grid, or the patch tokens; the final (token) norm fits every block's output
    tap_formats = OUTPUT_FORMATS
    finish_fits_every_tap = True

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = None,
        class_token: bool = True,
        fc_norm: bool | None = None,
        dynamic_img_size: bool = False,
        dynamic_img_pad: bool = False,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        patch_size = check_int("patch_size", patch_size, ge=1)
        size = _img_size(img_size, patch_size)
        in_chans = check_int("in_chans", in_chans, ge=1)
        num_classes = check_int("num_classes", num_classes, ge=0)
        embed_dim = check_int("embed_dim", embed_dim, ge=1)
        depth = check_int("depth", depth, ge=1)
        num_heads = check_int("num_heads", num_heads, ge=1)
        mlp_ratio = check_float("mlp_ratio", mlp_ratio, ge=1.0 / embed_dim)
        check_bool("qkv_bias", qkv_bias)
        if init_values is not None:
            init_values = check_float("init_values", init_values, ge=0.0)
        check_bool("class_token", class_token)
        if fc_norm is not None:
            check_bool("fc_norm", fc_norm)
        check_bool("dynamic_img_size", dynamic_img_size)
        check_bool("dynamic_img_pad", dynamic_img_pad)
        rates = {
            "drop_rate": drop_rate,
            "pos_drop_rate": pos_drop_rate,
            "proj_drop_rate": proj_drop_rate,
            "attn_drop_rate": attn_drop_rate,
            "drop_path_rate": drop_path_rate,
        }
        drop_rate, pos_drop_rate, proj_drop_rate, attn_drop_rate, drop_path_rate = (
            check_float(k, v, ge=0.0, lt=1.0) for k, v in rates.items()
        )
        pool = _check_pool(global_pool, num_classes, class_token)
        if embed_dim % num_heads:
            raise InvalidValueError(
                f"num_heads={num_heads} is invalid for embed_dim={embed_dim}: embed_dim must be a multiple of it"
            )
        # pooled patch tokens are normalised after pooling (fc_norm), the class token before (norm), as timm does
        use_fc_norm = pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm

        self.num_classes = num_classes
        self.global_pool = pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.has_class_token = class_token
        self.dynamic_img_size = dynamic_img_size
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(
            size, patch_size, in_chans, embed_dim, strict_img_size=not dynamic_img_size, dynamic_img_pad=dynamic_img_pad
        )
        self.cls_token: nn.Parameter | None = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        embed_len = self.patch_embed.num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.blocks = nn.Sequential(
            *(
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias=qkv_bias,
                    init_values=init_values,
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=drop_path_rate * i / max(depth - 1, 1),
                )
                for i in range(depth)
            )
        )
        self.feature_info = [
            FeatureInfo(index=i, module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size) for i in range(depth)
        ]
        self.norm: nn.Module = nn.Identity() if use_fc_norm else nn.LayerNorm(embed_dim, eps=_LN_EPS)
        self.fc_norm: nn.Module = nn.LayerNorm(embed_dim, eps=_LN_EPS) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._make_head(num_classes)

        self._init_tokens()
        self.blocks.apply(_init_linear)

    @torch.jit.unused
    def image_size_built_for(self) -> tuple[int, int] | None:
        """img_size: the size the position embeddings were made for (and, unless dynamic_img_size, the one taken)."""
        h, w = self.patch_embed.img_size
        return (h, w)

    def _init_tokens(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def init_all_weights(self) -> None:
        """Every tensor once: linears N(0, 0.02) with zero bias, pos_embed and cls_token as built, the rest torch's."""

        def rule(m: nn.Module) -> bool:
            if m is self:  # the model's own tensors: the position embeddings and the class token
                self._init_tokens()
                return True
            if isinstance(m, nn.Linear):
                _init_linear(m)
                return True
            return False  # the patch conv and the norms: torch's defaults; layer scale: init_values

        init_each_module(self, rule)

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        head = nn.Linear(self.embed_dim, num_classes)
        _init_linear(head)
        return head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one (0: none); optionally change the pooling (one of GLOBAL_POOLS).

        The norms stay where the model was built with them (before or after pooling), as in timm.
        """
        num_classes = check_int("num_classes", num_classes, ge=0)
        pool = _check_pool(self.global_pool if global_pool is None else global_pool, num_classes, self.has_class_token)
        self.head = self._make_head(num_classes)
        self.num_classes = num_classes
        self.global_pool = pool

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, W, C] patch tokens -> [B, prefix + H * W, C] tokens with position embeddings added."""
        if self.dynamic_img_size:
            pos_embed = resample_abs_pos_embed(
                self.pos_embed, [x.shape[1], x.shape[2]], self.patch_embed.grid_size, self.num_prefix_tokens
            )
        else:
            pos_embed = self.pos_embed
        x = x.flatten(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        out: torch.Tensor = self.pos_drop(x + pos_embed)
        return out

    @torch.jit.unused
    def _blocks_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = checkpoint_call(block, block, x)
        return x

    def no_weight_decay(self) -> frozenset[str]:
        """The position embedding and the prefix tokens (the names the reference lists, present or not)."""
        return frozenset({"pos_embed", "cls_token", "reg_token", "dist_token"})

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The embeddings, then each block (coarse or not), the final norm with the last; the head last."""
        return GroupMatcher.of(
            stem=r"^cls_token|reg_token|pos_embed|patch_embed|norm_pre",
            blocks=(GroupRule(r"^blocks\.(\d+)"), GroupRule(r"^norm", joins_previous=True)),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised token sequence after the last block, [B, prefix + patches, C]."""
        x = self._pos_embed(self.patch_embed(x))
        # is_scripting() must stand in the if itself: TorchScript then drops the branch it cannot compile
        if self.grad_checkpointing and not is_scripting():  # noqa: SIM108  # a ternary would not be dropped
            x = self._blocks_checkpointed(x)
        else:
            x = self.blocks(x)
        return self._finish(x)  # forward_intermediates ends the same way

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.norm(x)
        return out

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "token":
            return x[:, 0]
        if self.global_pool == "":
            return x
        x = x[:, self.num_prefix_tokens :]
        if self.global_pool == "avg":
            return x.mean(dim=1)
        if self.global_pool == "max":
            return x.amax(dim=1)
        return 0.5 * (x.amax(dim=1) + x.mean(dim=1))  # avgmax

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens (global_pool), normalise (fc_norm), drop out and classify; pre_logits stops before."""
        x = self.head_drop(self.fc_norm(self._pool(x)))
        if pre_logits:
            return x
        out: torch.Tensor = self.head(x)
        return out

    def _tap_steps(self) -> list[TapStep]:
        # one step per block; the first embeds the patches, noting their grid for every step's tap. A step's tap
        # is the block's patch tokens laid out on that grid, [B, H, W, C] (prefix tokens dropped): the final
        # norm, a LayerNorm over C, applies to it as to the tokens
        grid: list[int] = []
        checkpointed = self.grad_checkpointing

        def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if i == 0:
                x = self.patch_embed(x)
                grid[:] = [x.shape[1], x.shape[2]]
                x = self._pos_embed(x)
            block = self.blocks[i]
            if checkpointed and torch.is_grad_enabled() and not isinstance(x, torch.fx.Proxy):
                x = checkpoint_call(block, block, x)
            else:
                x = block(x)
            patches = x[:, self.num_prefix_tokens :]
            return x, patches.reshape(patches.shape[0], grid[0], grid[1], patches.shape[-1])

        return [functools.partial(step, i) for i in range(len(self.blocks))]

    def _format_tap(self, tap: torch.Tensor, output_fmt: str) -> torch.Tensor:
        """A block's patch grid, [B, H, W, C], in output_fmt: 'NCHW', 'NHWC' or 'NLC' (the patch tokens)."""
        if output_fmt == "NLC":
            return tap.flatten(1, 2)
        return tap if output_fmt == "NHWC" else tap.permute(0, 3, 1, 2).contiguous()

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep the blocks up to the last tap in indices; prune_norm drops the final norm, prune_head the head.

        Returns the kept tap indices.
        """
        kept = take_taps(self.feature_info, indices)
        check_bool("prune_norm", prune_norm)
        check_bool("prune_head", prune_head)
        last = max(kept)
        self.blocks = sequential_prefix(self.blocks, last + 1)
        self.feature_info = self.feature_info[: last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, "")
        return list(kept)


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A published checkpoint for model: position embeddings of another grid resampled (bicubic) to the model's.

    The checkpoint's grid is taken to be square (as every published one is). Resampling is logged, not
    warned about: it is what building with another img_size asks for, and it drops no weight.
    """
    posemb = state_dict.get("pos_embed")
    if not isinstance(model, VisionTransformer) or posemb is None or posemb.shape == model.pos_embed.shape:
        return state_dict
    prefix = model.num_prefix_tokens
    patches = posemb.shape[1] - prefix if posemb.ndim == 3 else -1
    side = math.isqrt(max(patches, 0))
    if posemb.ndim != 3 or side * side != patches or patches == 0 or posemb.shape[2] != model.embed_dim:
        raise CheckpointMismatchError(
            f"the checkpoint's pos_embed {tuple(posemb.shape)} does not fit this model: expected "
            f"[1, {prefix} + a square number of patch positions, {model.embed_dim}] to resample to the model's "
            f"{tuple(model.pos_embed.shape)}",
            mismatched=[f"pos_embed {tuple(posemb.shape)} vs {tuple(model.pos_embed.shape)}"],
        )
    grid = model.patch_embed.grid_size
    log.info("pos_embed resampled from a %dx%d to a %dx%d grid (bicubic)", side, side, grid[0], grid[1])
    resampled = resample_abs_pos_embed(posemb.detach(), grid, [side, side], prefix)
    return {**state_dict, "pos_embed": resampled}


_ARCHS: dict[str, dict[str, object]] = {
    "vit_tiny_patch16_224": {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small_patch16_224": {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base_patch16_224": {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
}

# every block by default, as for every zoo model (timm's features_only default is the last three: out_indices=3)
MODEL_SPECS: tuple[ModelSpec, ...] = tuple(
    attrs.evolve(spec, pretrained_filter=checkpoint_filter)
    for spec in family_specs(__name__, VisionTransformer, _ARCHS, FeatureCfg(feature_cls="getter"))
)
