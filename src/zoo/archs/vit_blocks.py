"""Vision Transformer blocks and argument checks: the pre-norm transformer block and the head's pooling rules."""

from __future__ import annotations

import torch
from torch import nn

from zoo.archs.layers import DropPath
from zoo.archs.layers.diff_attention import DiffAttention
from zoo.archs.layers.layer_scale import LayerScale
from zoo.archs.layers.mlp import GluMlp, Mlp
from zoo.archs.layers.self_attention import Attention
from zoo.domain.checks import check_choice, check_int, check_ints, is_int
from zoo.domain.errors import InvalidValueError

__all__ = [
    "ATTN_LAYERS",
    "GLOBAL_POOLS",
    "MLP_LAYERS",
    "Block",
    "check_pool",
    "head_pools",
    "img_size_pair",
    "init_linear",
]

# 'token' is the class token; 'map' attention-pools the tokens with a learned query (only in a model built
# with it); the others reduce the patch tokens; '' keeps the whole token sequence
GLOBAL_POOLS: tuple[str, ...] = ("token", "avg", "avgmax", "max", "map", "")
# the block's MLP: 'mlp' (fc1, activation, fc2) or 'glu' (a gated MLP with value and gate packed in fc1)
MLP_LAYERS: tuple[str, ...] = ("mlp", "glu")
# the block's attention: plain multi-head ('attn') or differential ('diff', layers/diff_attention.py)
ATTN_LAYERS: tuple[str, ...] = ("attn", "diff")


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x)), each optionally layer-scaled.

    attn_layer picks the attention (ATTN_LAYERS), mlp_layer the MLP (MLP_LAYERS); depth is the block's index.
    """

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
        norm_eps: float = 1e-6,
        act_layer: str = "gelu",
        mlp_layer: str = "mlp",
        attn_layer: str = "attn",
        depth: int = 0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        # 'diff': differential attention, whose lambda starts from a value set by the block's index (depth)
        self.attn: nn.Module = (
            DiffAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, depth=depth)
            if check_choice("attn_layer", attn_layer, ATTN_LAYERS) == "diff"
            else Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        )
        self.ls1: nn.Module = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path1: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        mlp = GluMlp if check_choice("mlp_layer", mlp_layer, MLP_LAYERS) == "glu" else Mlp
        self.mlp = mlp(dim, int(dim * mlp_ratio), drop=proj_drop, act_layer=act_layer)
        self.ls2: nn.Module = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path2: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        out: torch.Tensor = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return out


def img_size_pair(value: object, patch_size: int) -> tuple[int, int]:
    """img_size (one side or height, width) as a pair, each side at least one patch."""
    if is_int(value):
        side = check_int("img_size", value, ge=patch_size)
        return side, side
    h, w = check_ints("img_size", value, length=2, ge=patch_size)
    return h, w


def head_pools(*, class_token: bool, attn_pool: bool) -> tuple[str, ...]:
    """The poolings a ViT head takes: 'token' where there is a class token, 'map' where there is an attention
    pool (at construction, or in a model built with one), the reductions of the patch tokens and '' always."""
    return tuple(p for p in GLOBAL_POOLS if (class_token or p != "token") and (attn_pool or p != "map"))


def check_pool(global_pool: object, num_classes: int, *, class_token: bool, attn_pool: bool) -> str:
    """The pooling for a head of num_classes, or InvalidValueError (nothing is changed before this passes).

    attn_pool: whether 'map' is available (at construction, or where the model was built with it).
    """
    pools = head_pools(class_token=class_token, attn_pool=attn_pool)
    listed = ", ".join(repr(p) for p in pools)
    named = global_pool if isinstance(global_pool, str) else None  # anything else: check_choice names it
    if named == "map" and not attn_pool:
        raise InvalidValueError(
            "global_pool='map' (attention pooling) is available only in a model built with it; "
            f"expected one of {listed}"
        )
    if named == "token" and not class_token:
        raise InvalidValueError(
            f"global_pool='token' needs the class token (class_token=True), which this model has not; "
            f"expected one of {listed}"
        )
    pool = str(check_choice("global_pool", global_pool, pools))
    if pool == "" and num_classes > 0:
        raise InvalidValueError(
            f"global_pool='' (the whole token sequence) needs num_classes=0, got num_classes={num_classes}; "
            f"use one of {', '.join(repr(p) for p in pools if p)} to keep a classifier"
        )
    return pool


def init_linear(m: nn.Module) -> None:
    """A linear layer as ViTs start it: weight N(0, 0.02), bias zero."""
    if isinstance(m, nn.Linear):
        # timm's trunc_normal_(std=0.02) cuts at +-2 (absolute), 100 std out: the same as a plain normal_,
        # which takes half the time (this init is most of a large ViT's build time)
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def init_gate(fc1: nn.Linear) -> None:
    """A gated MLP's fc1 starts with its gate half near zero (weight N(0, 1e-6)) and bias one."""
    half = fc1.weight.shape[0] // 2
    with torch.no_grad():
        nn.init.normal_(fc1.weight[half:], std=1e-6)
        if fc1.bias is not None:
            nn.init.ones_(fc1.bias[half:])
