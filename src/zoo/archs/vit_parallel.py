"""The ViT's block kinds: the pre-norm block (vit_blocks.Block), the residual post-norm one
(vit_variants.ResPostBlock) and the parallel ones, whose attention and MLP read the same normalised input
through one fused input projection (ViT-22B, arXiv 2302.05442), plain or with differential attention;
make_block builds a block of a kind by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers import DropPath
from zoo.archs.layers.diff_attention import diff_attend, diff_head_dim, diff_lambda, diff_lambda_init
from zoo.archs.layers.layer_scale import LayerScale
from zoo.archs.layers.mlp import make_mlp_act
from zoo.archs.vit_blocks import ATTN_LAYERS, Block
from zoo.archs.vit_variants import ResPostBlock
from zoo.domain.checks import check_choice, check_int
from zoo.domain.errors import InvalidValueError

__all__ = ["BLOCK_FNS", "DiffParallelScalingBlock", "ParallelScalingBlock", "make_block"]

# 'block': attention then MLP, each on its own norm (x + f(norm(x))); 'res_post': each branch's output
# normalised instead (x + norm(f(x)), the norms starting at init_values where given); 'parallel': both from one
# norm and one input projection, each with its output projection; 'diff_parallel': the same with differential
# attention and one fused output
BLOCK_FNS: tuple[str, ...] = ("block", "res_post", "parallel", "diff_parallel")


class _ParallelBase(nn.Module):
    """The parallel blocks' shared part: in_norm, in_proj (MLP hidden, q, k, v), the MLP's bias where in_proj
    has none (no qkv bias), the activation, layer scale and drop path."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float,
        *,
        qkv_bias: bool,
        init_values: float | None,
        proj_drop: float,
        attn_drop: float,
        drop_path: float,
        norm_eps: float,
        act_layer: str,
    ) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.mlp_hidden = hidden
        self.attn_drop = attn_drop
        # the MLP's bias rides in in_proj's bias when the qkv projections have one; without, it is separate
        self.mlp_bias: nn.Parameter | None = None if qkv_bias else nn.Parameter(torch.zeros(hidden))
        self.in_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.in_proj = nn.Linear(dim, hidden + 3 * dim, bias=qkv_bias)
        self.mlp_drop = nn.Dropout(proj_drop)
        self.mlp_act = make_mlp_act(act_layer)
        self.init_values = init_values
        self.drop_path_rate = drop_path

    def _add_scale_and_drop_path(self, dim: int) -> None:
        # registered after the subclass's output projections: published checkpoints list their tensors in that order
        self.ls: nn.Module = LayerScale(dim, self.init_values) if self.init_values is not None else nn.Identity()
        self.drop_path: nn.Module = DropPath(self.drop_path_rate) if self.drop_path_rate > 0.0 else nn.Identity()

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The MLP's activated hidden units and the queries, keys and values, from one projection of norm(x)."""
        dim = x.shape[-1]
        y = self.in_proj(self.in_norm(x))
        h, q, k, v = torch.split(y, [self.mlp_hidden, dim, dim, dim], dim=-1)
        if self.mlp_bias is not None:
            h = h + self.mlp_bias
        return self.mlp_drop(self.mlp_act(h)), q, k, v

    def _dropout_p(self) -> float:
        return self.attn_drop if self.training else 0.0


class ParallelScalingBlock(_ParallelBase):
    """x + ls(attn_out_proj(attention) + mlp_out_proj(mlp)), both branches read one projection of in_norm(x)."""

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
    ) -> None:
        super().__init__(
            dim,
            mlp_ratio,
            qkv_bias=qkv_bias,
            init_values=init_values,
            proj_drop=proj_drop,
            attn_drop=attn_drop,
            drop_path=drop_path,
            norm_eps=norm_eps,
            act_layer=act_layer,
        )
        if dim % num_heads:
            raise InvalidValueError(
                f"num_heads={num_heads} is invalid for embed_dim={dim}: embed_dim must be a multiple of it"
            )
        self.num_heads = num_heads
        self.attn_out_proj = nn.Linear(dim, dim)
        self.mlp_out_proj = nn.Linear(self.mlp_hidden, dim)
        self._add_scale_and_drop_path(dim)

    def reset_parameters(self) -> None:
        """The MLP's separate bias (where there is one) zero; the layers start as torch's."""
        if self.mlp_bias is not None:
            nn.init.zeros_(self.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape[0], x.shape[1], x.shape[2]
        h, q, k, v = self._split(x)
        d = c // self.num_heads
        q = q.reshape(b, n, self.num_heads, d).transpose(1, 2)
        k = k.reshape(b, n, self.num_heads, d).transpose(1, 2)
        v = v.reshape(b, n, self.num_heads, d).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self._dropout_p())
        y = self.attn_out_proj(a.transpose(1, 2).reshape(b, n, c)) + self.mlp_out_proj(h)
        out: torch.Tensor = x + self.drop_path(self.ls(y))
        return out


class DiffParallelScalingBlock(_ParallelBase):
    """A parallel block with differential attention (layers/diff_attention.py): the attention's output, normalised
    per head (sub_norm) and scaled by 1 - lambda_init, and the MLP's hidden units share one output projection."""

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
        depth: int = 0,
    ) -> None:
        super().__init__(
            dim,
            mlp_ratio,
            qkv_bias=qkv_bias,
            init_values=init_values,
            proj_drop=proj_drop,
            attn_drop=attn_drop,
            drop_path=drop_path,
            norm_eps=norm_eps,
            act_layer=act_layer,
        )
        self.num_heads = num_heads
        half = diff_head_dim(dim, num_heads)
        self.lambda_init = diff_lambda_init(check_int("depth", depth, ge=0))
        self.lambda_q1 = nn.Parameter(torch.empty(half))
        self.lambda_k1 = nn.Parameter(torch.empty(half))
        self.lambda_q2 = nn.Parameter(torch.empty(half))
        self.lambda_k2 = nn.Parameter(torch.empty(half))
        self.sub_norm = nn.RMSNorm(2 * half, eps=1e-5)
        self.out_proj = nn.Linear(dim + self.mlp_hidden, dim)
        self._add_scale_and_drop_path(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The lambda vectors N(0, 0.1), the MLP's separate bias (where there is one) zero; the layers as torch's."""
        for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(p, std=0.1)
        if self.mlp_bias is not None:
            nn.init.zeros_(self.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape[0], x.shape[1], x.shape[2]
        h, q, k, v = self._split(x)
        lam = diff_lambda(self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2, self.lambda_init)
        a = self.sub_norm(diff_attend(q, k, v, lam, self.num_heads, self._dropout_p())) * (1.0 - self.lambda_init)
        y = self.out_proj(torch.cat((a.transpose(1, 2).reshape(b, n, c), h), dim=-1))
        out: torch.Tensor = x + self.drop_path(self.ls(y))
        return out


def make_block(
    block_fn: str,
    dim: int,
    num_heads: int,
    mlp_ratio: float,
    *,
    qkv_bias: bool,
    init_values: float | None,
    proj_drop: float,
    attn_drop: float,
    drop_path: float,
    norm_eps: float,
    act_layer: str,
    mlp_layer: str,
    attn_layer: str,
    depth: int,
    norm_layer: str = "layernorm",
    proj_bias: bool = True,
    scale_attn_norm: bool = False,
    scale_mlp_norm: bool = False,
) -> nn.Module:
    """A block of kind block_fn (one of BLOCK_FNS) at index depth; attn_layer and mlp_layer choose a 'block' block's
    attention and MLP (the parallel kinds have their own, so they refuse others than 'attn' and 'mlp'); norm_layer,
    proj_bias and the inner norms (scale_attn_norm, scale_mlp_norm) apply to 'block' and 'res_post' blocks."""
    check_choice("block_fn", block_fn, BLOCK_FNS)
    check_choice("attn_layer", attn_layer, ATTN_LAYERS)
    if block_fn == "res_post":
        if attn_layer != "attn":
            raise InvalidValueError(
                f"attn_layer={attn_layer!r} is invalid with block_fn='res_post': expected attn_layer='attn'"
            )
        return ResPostBlock(
            dim,
            num_heads,
            mlp_ratio,
            qkv_bias=qkv_bias,
            init_values=init_values,
            proj_drop=proj_drop,
            attn_drop=attn_drop,
            drop_path=drop_path,
            norm_eps=norm_eps,
            act_layer=act_layer,
            mlp_layer=mlp_layer,
            norm_layer=norm_layer,
            proj_bias=proj_bias,
            scale_attn_norm=scale_attn_norm,
            scale_mlp_norm=scale_mlp_norm,
        )
    if block_fn == "block":
        return Block(
            dim,
            num_heads,
            mlp_ratio,
            qkv_bias=qkv_bias,
            init_values=init_values,
            proj_drop=proj_drop,
            attn_drop=attn_drop,
            drop_path=drop_path,
            norm_eps=norm_eps,
            act_layer=act_layer,
            mlp_layer=mlp_layer,
            attn_layer=attn_layer,
            depth=depth,
            norm_layer=norm_layer,
            proj_bias=proj_bias,
            scale_attn_norm=scale_attn_norm,
            scale_mlp_norm=scale_mlp_norm,
        )
    own = {
        "attn_layer": (attn_layer, "attn"),
        "mlp_layer": (mlp_layer, "mlp"),
        "norm_layer": (norm_layer, "layernorm"),
        "proj_bias": (proj_bias, True),
        "scale_attn_norm": (scale_attn_norm, False),
        "scale_mlp_norm": (scale_mlp_norm, False),
    }
    for key, (value, expected) in own.items():
        if value != expected:
            raise InvalidValueError(
                f"{key}={value!r} is invalid with block_fn={block_fn!r}, whose attention and MLP are its own: "
                f"expected {key}={expected!r}, or block_fn='block'"
            )
    if block_fn == "parallel":
        return ParallelScalingBlock(
            dim,
            num_heads,
            mlp_ratio,
            qkv_bias=qkv_bias,
            init_values=init_values,
            proj_drop=proj_drop,
            attn_drop=attn_drop,
            drop_path=drop_path,
            norm_eps=norm_eps,
            act_layer=act_layer,
        )
    return DiffParallelScalingBlock(
        dim,
        num_heads,
        mlp_ratio,
        qkv_bias=qkv_bias,
        init_values=init_values,
        proj_drop=proj_drop,
        attn_drop=attn_drop,
        drop_path=drop_path,
        norm_eps=norm_eps,
        act_layer=act_layer,
        depth=depth,
    )
