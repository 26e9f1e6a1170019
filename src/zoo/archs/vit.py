"""Vision Transformer: patch tokens, optional class and register tokens, learned absolute position embeddings.

One class serves the plain ViTs, CLIP image towers (a norm before the blocks, QuickGELU), DINOv2 (layer
scale, register tokens, a gated MLP), the GAP and register-token models, SigLIP (an attention-pool 'map'
head), AIMv2 (RMS norms, a SwiGLU MLP, a normed patch embedding), FlexiViT, TIPSv2, EVA, InternViT, C-RADIO,
BEiT-3 (norms inside the attention and the MLP) and the residual post-norm ViT (vit_variants.py). Parameter
names and shapes follow timm 1.0.31 for the same model names, so published checkpoints for those names load
unchanged; a checkpoint made for another image size has its position embeddings resampled to the model's grid
on loading, one for another patch size its patch projection (checkpoint_filter).
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
from zoo.archs.layers import init_each_module, is_scripting, sequential_prefix
from zoo.archs.layers.attention_pool import AttentionPoolLatent
from zoo.archs.layers.mlp import MLP_ACTS
from zoo.archs.layers.norm import TOKEN_NORMS, token_norm
from zoo.archs.layers.patch_embed import PatchEmbed, resample_patch_embed
from zoo.archs.layers.pos_embed import resample_abs_pos_embed
from zoo.archs.surface import TapStep, checkpoint_call, take_taps
from zoo.archs.vit_blocks import (
    ATTN_LAYERS,
    GLOBAL_POOLS,
    MLP_LAYERS,
    Block,
    BlockCfg,
    check_pool,
    head_pools,
    img_size_pair,
    init_linear,
)
from zoo.archs.vit_cfgs import ARCHS
from zoo.archs.vit_parallel import BLOCK_FNS, make_block
from zoo.archs.vit_variant_cfgs import VARIANT_ARCHS
from zoo.archs.vit_variants import apply_late_inits, late_inits
from zoo.domain.checks import check_bool, check_choice, check_float, check_int
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

# tap layouts: a map (channels first or last) over the patch grid, or the patch tokens as a sequence
OUTPUT_FORMATS: tuple[str, ...] = ("NCHW", "NHWC", "NLC")

# a leaf of torch.fx graphs: the resampling runs on the real grid size each time the traced graph runs
torch.fx.wrap("resample_abs_pos_embed")


class VisionTransformer(ZooModule):
    """ViT: patch embedding, prefix tokens and position embeddings, transformer blocks, final norm, pooled head.

    The prefix is the class token (class_token) then reg_tokens register tokens; position embeddings cover the
    prefix too unless no_embed_class. pre_norm adds a norm before the blocks (CLIP, whose patch projection then
    has no bias); global_pool='map' pools with a learned query (SigLIP). block_fn picks the blocks (BLOCK_FNS:
    pre-norm, or attention and MLP in parallel), attn_layer a pre-norm block's attention ('diff': differential).
    forward_features returns the normalised token sequence [B, prefix + patches, C]; the feature taps are the
    blocks, which forward_intermediates returns as maps over the patch grid (prefix tokens dropped).
    Built for one img_size (other input sizes are refused with InvalidValueError) unless dynamic_img_size,
    which resamples the position embeddings to each input's grid (and dynamic_img_pad pads inputs to whole
    patches). set_grad_checkpointing recomputes each block's activations in backward. global_pools: the
    poolings reset_classifier takes on this model ('token' with a class token, 'map' while its attention pool lasts).
    Feature extractors: 'getter' only, since the blocks' outputs are token sequences, not maps.
    """

    # the feature extractor strategies whose outputs are this model's feature maps
    feature_classes: ClassVar[tuple[str, ...]] = ("getter",)
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
        reg_tokens: int = 0,
        no_embed_class: bool = False,
        pre_norm: bool = False,
        final_norm: bool = True,
        fc_norm: bool | None = None,
        pool_include_prefix: bool = False,
        norm_eps: float = 1e-6,
        act_layer: str = "gelu",
        mlp_layer: str = "mlp",
        norm_layer: str = "layernorm",
        embed_norm: bool = False,
        proj_bias: bool = True,
        block_fn: str = "block",
        attn_layer: str = "attn",
        scale_attn_norm: bool = False,
        scale_mlp_norm: bool = False,
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
        size = img_size_pair(img_size, patch_size)
        in_chans = check_int("in_chans", in_chans, ge=1)
        num_classes = check_int("num_classes", num_classes, ge=0)
        embed_dim = check_int("embed_dim", embed_dim, ge=1)
        depth = check_int("depth", depth, ge=1)
        num_heads = check_int("num_heads", num_heads, ge=1)
        mlp_ratio = check_float("mlp_ratio", mlp_ratio, ge=1.0 / embed_dim)
        if init_values is not None:
            init_values = check_float("init_values", init_values, ge=0.0)
        reg_tokens = check_int("reg_tokens", reg_tokens, ge=0)
        norm_eps = check_float("norm_eps", norm_eps, ge=1e-12)
        check_choice("act_layer", act_layer, MLP_ACTS)
        check_choice("mlp_layer", mlp_layer, MLP_LAYERS)
        check_choice("norm_layer", norm_layer, TOKEN_NORMS)
        check_choice("block_fn", block_fn, BLOCK_FNS)
        check_choice("attn_layer", attn_layer, ATTN_LAYERS)
        flags = {
            "qkv_bias": qkv_bias,
            "class_token": class_token,
            "no_embed_class": no_embed_class,
            "pre_norm": pre_norm,
            "final_norm": final_norm,
            "pool_include_prefix": pool_include_prefix,
            "dynamic_img_size": dynamic_img_size,
            "dynamic_img_pad": dynamic_img_pad,
            "embed_norm": embed_norm,
            "proj_bias": proj_bias,
            "scale_attn_norm": scale_attn_norm,
            "scale_mlp_norm": scale_mlp_norm,
        }
        for k, v in flags.items():
            check_bool(k, v)
        if fc_norm is not None:
            check_bool("fc_norm", fc_norm)
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
        pool = check_pool(global_pool, num_classes, class_token=class_token, attn_pool=True)
        if embed_dim % num_heads:
            raise InvalidValueError(
                f"num_heads={num_heads} is invalid for embed_dim={embed_dim}: embed_dim must be a multiple of it"
            )
        # pooled patch tokens are normalised after pooling (fc_norm), the class token before (norm), as timm does
        use_fc_norm = pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm

        self.num_classes = num_classes
        self.global_pool = pool
        # what reset_classifier takes: 'token' needs the class token, 'map' the attention pool built with 'map'
        self.global_pools = head_pools(class_token=class_token, attn_pool=pool == "map")
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = (1 if class_token else 0) + reg_tokens
        self.num_reg_tokens = reg_tokens
        self.has_class_token = class_token
        self.no_embed_class = no_embed_class
        self.pool_include_prefix = pool_include_prefix
        self.dynamic_img_size = dynamic_img_size
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(
            size,
            patch_size,
            in_chans,
            embed_dim,
            strict_img_size=not dynamic_img_size,
            dynamic_img_pad=dynamic_img_pad,
            bias=not pre_norm,
            norm=token_norm(norm_layer, embed_dim, norm_eps) if embed_norm else None,
        )
        self.cls_token: nn.Parameter | None = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token: nn.Parameter | None = (
            nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        )
        embed_len = self.patch_embed.num_patches + (0 if no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.norm_pre: nn.Module = token_norm(norm_layer, embed_dim, norm_eps) if pre_norm else nn.Identity()
        cfg = BlockCfg(
            embed_dim,
            num_heads,
            mlp_ratio,
            qkv_bias=qkv_bias,
            init_values=init_values,
            proj_drop=proj_drop_rate,
            attn_drop=attn_drop_rate,
            norm_eps=norm_eps,
            act_layer=act_layer,
            mlp_layer=mlp_layer,
            attn_layer=attn_layer,
            norm_layer=norm_layer,
            proj_bias=proj_bias,
            scale_attn_norm=scale_attn_norm,
            scale_mlp_norm=scale_mlp_norm,
        )
        self.blocks = nn.Sequential(
            *(
                make_block(block_fn, attrs.evolve(cfg, drop_path=drop_path_rate * i / max(depth - 1, 1), depth=i))
                for i in range(depth)
            )
        )
        self.feature_info = [
            FeatureInfo(index=i, module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size) for i in range(depth)
        ]
        final = final_norm and not use_fc_norm
        self.norm: nn.Module = token_norm(norm_layer, embed_dim, norm_eps) if final else nn.Identity()
        # the attention pool exists only in a model built with 'map' (an Identity stands in otherwise)
        self.attn_pool: nn.Module = (
            AttentionPoolLatent(embed_dim, num_heads, mlp_ratio, norm_eps=norm_eps, act_layer=act_layer)
            if pool == "map"
            else nn.Identity()
        )
        self.fc_norm: nn.Module = (
            token_norm(norm_layer, embed_dim, norm_eps) if final_norm and use_fc_norm else nn.Identity()
        )
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._make_head(num_classes)

        self._init_tokens()
        self.blocks.apply(init_linear)
        apply_late_inits(self.blocks)

    @torch.jit.unused
    def image_size_built_for(self) -> tuple[int, int] | None:
        """img_size: the size the position embeddings were made for (and, unless dynamic_img_size, the one taken)."""
        h, w = self.patch_embed.img_size
        return (h, w)

    def _init_tokens(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)

    def init_all_weights(self) -> None:
        """Every tensor once: linears N(0, 0.02) with zero bias (a gated MLP's gate as timm starts it),
        pos_embed and the prefix tokens as built, the attention pool's latent query, a post-norm block's norms
        at init_values, the rest torch's."""
        late = late_inits(self)

        def rule(m: nn.Module) -> bool:
            if m is self:  # the model's own tensors: the position embeddings and the prefix tokens
                self._init_tokens()
                return True
            if isinstance(m, nn.Linear):
                init_linear(m)
            elif isinstance(m, AttentionPoolLatent):
                m.reset_latent()
            elif id(m) not in late:
                return False  # the patch conv and the norms: torch's defaults; layer scale: init_values
            if id(m) in late:
                with torch.no_grad():
                    late[id(m)]()
            return True

        init_each_module(self, rule)

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        head = nn.Linear(self.embed_dim, num_classes)
        init_linear(head)
        return head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one (0: none); optionally change the pooling (one of global_pools).

        The norms stay where the model was built with them (before or after pooling), as in timm. 'map' is
        kept only by a model built with it; another pooling drops its attention pool for good (and 'map'
        leaves global_pools). 'token' needs the class token.
        """
        num_classes = check_int("num_classes", num_classes, ge=0)
        pool = check_pool(
            self.global_pool if global_pool is None else global_pool,
            num_classes,
            class_token=self.has_class_token,
            attn_pool=isinstance(self.attn_pool, AttentionPoolLatent),
        )
        self.head = self._make_head(num_classes)
        if pool != "map":
            self.attn_pool = nn.Identity()
        self.num_classes = num_classes
        self.global_pool = pool
        self.global_pools = head_pools(class_token=self.has_class_token, attn_pool=pool == "map")

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, W, C] patch tokens -> [B, prefix + H * W, C] tokens with position embeddings added."""
        embedded_prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        if self.dynamic_img_size:
            pos_embed = resample_abs_pos_embed(
                self.pos_embed, [x.shape[1], x.shape[2]], self.patch_embed.grid_size, embedded_prefix
            )
        else:
            pos_embed = self.pos_embed
        x = x.flatten(1, 2)
        if self.no_embed_class:
            x = x + pos_embed  # the patches alone have positions; the prefix joins after
        prefix: list[torch.Tensor] = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        if len(prefix) > 0:
            prefix.append(x)
            x = torch.cat(prefix, dim=1)
        if not self.no_embed_class:
            x = x + pos_embed
        out: torch.Tensor = self.pos_drop(x)
        return out

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.norm_pre(self._pos_embed(x))
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
        x = self._embed(self.patch_embed(x))
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
        if not self.pool_include_prefix:
            x = x[:, self.num_prefix_tokens :]
        if self.global_pool == "map":
            out: torch.Tensor = self.attn_pool(x)
            return out
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
                x = self._embed(x)
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
    """A published checkpoint for model: position embeddings of another grid resampled (bicubic) to the model's,
    and a patch projection of another patch size resampled to the model's (FlexiViT's pseudo-inverse resize).

    The checkpoint's grid is taken to be square (as every published one is). Resampling is logged, not
    warned about: it is what building with another img_size or patch_size asks for, and it drops no weight.
    """
    state_dict = _resample_patches(state_dict, model)
    posemb = state_dict.get("pos_embed")
    if not isinstance(model, VisionTransformer) or posemb is None or posemb.shape == model.pos_embed.shape:
        return state_dict
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
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


def _resample_patches(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    kernel = state_dict.get("patch_embed.proj.weight")
    if not isinstance(model, VisionTransformer) or kernel is None or kernel.ndim != 4:
        return state_dict
    ph, pw = model.patch_embed.patch_size
    if kernel.shape[-2:] == (ph, pw):
        return state_dict
    log.info("patch_embed resampled from %dx%d to %dx%d patches", kernel.shape[-2], kernel.shape[-1], ph, pw)
    return {**state_dict, "patch_embed.proj.weight": resample_patch_embed(kernel.detach(), [ph, pw])}


# every block by default, as for every zoo model (timm's features_only default is the last three: out_indices=3)
MODEL_SPECS: tuple[ModelSpec, ...] = tuple(
    attrs.evolve(spec, pretrained_filter=checkpoint_filter)
    for spec in family_specs(__name__, VisionTransformer, {**ARCHS, **VARIANT_ARCHS}, FeatureCfg(feature_cls="getter"))
)
