"""Vision Transformer blocks and argument checks: the pre-norm transformer block and the head's pooling rules."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from zoo.archs.layers import DropPath
from zoo.archs.layers.diff_attention import DiffAttention
from zoo.archs.layers.layer_scale import LayerScale
from zoo.archs.layers.mlp import GluMlp, Mlp, SwiGLU
from zoo.archs.layers.norm import token_norm
from zoo.archs.layers.self_attention import Attention
from zoo.domain.checks import check_choice, check_int, check_ints, is_int
from zoo.domain.errors import InvalidValueError

__all__ = [
    "ATTN_LAYERS",
    "GLOBAL_POOLS",
    "MLP_LAYERS",
    "Block",
    "BlockCfg",
    "block_attention",
    "block_mlp",
    "check_pool",
    "head_pools",
    "img_size_pair",
    "init_linear",
    "make_drop_path",
    "make_layer_scale",
    "make_mlp",
]

# 'token' is the class token; 'map' attention-pools the tokens with a learned query (only in a model built
# with it); the others reduce the patch tokens; '' keeps the whole token sequence
GLOBAL_POOLS: tuple[str, ...] = ("token", "avg", "avgmax", "max", "map", "")
# the block's MLP: 'mlp' (fc1, activation, fc2), 'glu' (a gated MLP with value and gate packed in fc1) or
# 'swiglu' (a gated MLP with the gate in fc1_g and the value in fc1_x, of mlp_ratio's width each)
MLP_LAYERS: tuple[str, ...] = ("mlp", "glu", "swiglu")
# the block's attention: plain multi-head ('attn') or differential ('diff', layers/diff_attention.py)
ATTN_LAYERS: tuple[str, ...] = ("attn", "diff")


@attrs.frozen
class BlockCfg:
    """What a ViT block is built from (every kind in vit_parallel.BLOCK_FNS takes one).

    All kinds read the width, heads, MLP ratio, qkv bias, layer scale (init_values), dropouts, drop path, norm
    eps and activation. mlp_layer, attn_layer, norm_layer, proj_bias and the inner norms (scale_attn_norm,
    scale_mlp_norm) choose the layers of the pre-norm and post-norm kinds; the parallel kinds have their own
    and take only these defaults. depth is the block's index (differential attention's lambda starts from it).
    """

    dim: int
    num_heads: int
    mlp_ratio: float
    qkv_bias: bool = True
    init_values: float | None = None
    proj_drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    norm_eps: float = 1e-6
    act_layer: str = "gelu"
    mlp_layer: str = "mlp"
    attn_layer: str = "attn"
    norm_layer: str = "layernorm"
    proj_bias: bool = True
    scale_attn_norm: bool = False
    scale_mlp_norm: bool = False
    depth: int = 0


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x)), each optionally layer-scaled.

    attn_layer picks the attention (ATTN_LAYERS), mlp_layer the MLP (MLP_LAYERS); depth is the block's index.
    norm_layer is one of TOKEN_NORMS; scale_attn_norm / scale_mlp_norm add a norm inside the attention (before
    its projection) and inside the MLP (before fc2), as BEiT-3 has them; proj_bias=False drops the biases of
    the attention's projection and of the MLP (both for the plain attention only).
    """

    def __init__(self, cfg: BlockCfg) -> None:
        super().__init__()
        self.norm1 = token_norm(cfg.norm_layer, cfg.dim, cfg.norm_eps)
        self.attn: nn.Module
        if check_choice("attn_layer", cfg.attn_layer, ATTN_LAYERS) == "diff":
            # differential attention, whose lambda starts from a value set by the block's index (depth)
            if not cfg.proj_bias or cfg.scale_attn_norm:
                raise InvalidValueError(
                    "attn_layer='diff' is invalid with proj_bias=False or scale_attn_norm=True: the differential "
                    "attention has its own projection and norm; expected attn_layer='attn'"
                )
            self.attn = DiffAttention(
                cfg.dim,
                cfg.num_heads,
                qkv_bias=cfg.qkv_bias,
                attn_drop=cfg.attn_drop,
                proj_drop=cfg.proj_drop,
                depth=cfg.depth,
            )
        else:
            self.attn = block_attention(cfg)
        self.ls1 = make_layer_scale(cfg)
        self.drop_path1 = make_drop_path(cfg)
        self.norm2 = token_norm(cfg.norm_layer, cfg.dim, cfg.norm_eps)
        self.mlp = block_mlp(cfg)
        self.ls2 = make_layer_scale(cfg)
        self.drop_path2 = make_drop_path(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        out: torch.Tensor = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return out


def block_attention(cfg: BlockCfg) -> Attention:
    """The plain multi-head attention of a pre-norm or post-norm block, with its inner norm where asked."""
    return Attention(
        cfg.dim,
        cfg.num_heads,
        qkv_bias=cfg.qkv_bias,
        proj_bias=cfg.proj_bias,
        attn_drop=cfg.attn_drop,
        proj_drop=cfg.proj_drop,
        norm=token_norm(cfg.norm_layer, cfg.dim, cfg.norm_eps) if cfg.scale_attn_norm else None,
    )


def block_mlp(cfg: BlockCfg) -> nn.Module:
    """The MLP of a pre-norm or post-norm block (cfg.mlp_layer), with its inner norm where asked."""
    inner = (cfg.norm_layer, cfg.norm_eps) if cfg.scale_mlp_norm else None
    return make_mlp(cfg.mlp_layer, cfg.dim, cfg.mlp_ratio, cfg.proj_bias, cfg.proj_drop, cfg.act_layer, inner)


def make_layer_scale(cfg: BlockCfg) -> nn.Module:
    """A branch's layer scale from cfg.init_values (an Identity without)."""
    return LayerScale(cfg.dim, cfg.init_values) if cfg.init_values is not None else nn.Identity()


def make_drop_path(cfg: BlockCfg) -> nn.Module:
    """A branch's drop path at cfg.drop_path (an Identity at 0)."""
    return DropPath(cfg.drop_path) if cfg.drop_path > 0.0 else nn.Identity()


def make_mlp(
    kind: str,
    dim: int,
    mlp_ratio: float,
    bias: bool,
    drop: float,
    act_layer: str,
    norm: tuple[str, float] | None,
) -> nn.Module:
    """A block's MLP by kind (one of MLP_LAYERS), hidden width dim * mlp_ratio; norm: (kind, eps) of its inner norm."""
    hidden = int(dim * mlp_ratio)
    kind = str(check_choice("mlp_layer", kind, MLP_LAYERS))
    if kind == "glu":
        return GluMlp(dim, hidden, bias=bias, drop=drop, act_layer=act_layer)
    # the inner norm is over the hidden width (a gated MLP has none in the published models)
    inner = token_norm(norm[0], hidden, norm[1]) if norm is not None else None
    if kind == "swiglu":
        return SwiGLU(dim, hidden, bias=bias, drop=drop, act_layer=act_layer, norm=inner)
    return Mlp(dim, hidden, bias=bias, drop=drop, act_layer=act_layer, norm=inner)


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
