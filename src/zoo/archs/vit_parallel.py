"""The ViT's block kinds: the pre-norm block (vit_blocks.Block), the residual post-norm one
(vit_variants.ResPostBlock) and the parallel ones, whose attention and MLP read the same normalised input
through one fused input projection (ViT-22B, arXiv 2302.05442), plain or with differential attention;
make_block builds a block of a kind by name.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers.diff_attention import diff_attend, diff_head_dim, diff_lambda, diff_lambda_init
from zoo.archs.layers.mlp import make_mlp_act
from zoo.archs.vit_blocks import ATTN_LAYERS, Block, BlockCfg, make_drop_path, make_layer_scale
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

    def __init__(self, cfg: BlockCfg) -> None:
        super().__init__()
        hidden = int(cfg.mlp_ratio * cfg.dim)
        self.mlp_hidden = hidden
        self.attn_drop = cfg.attn_drop
        # the MLP's bias rides in in_proj's bias when the qkv projections have one; without, it is separate
        self.mlp_bias: nn.Parameter | None = None if cfg.qkv_bias else nn.Parameter(torch.zeros(hidden))
        self.in_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.in_proj = nn.Linear(cfg.dim, hidden + 3 * cfg.dim, bias=cfg.qkv_bias)
        self.mlp_drop = nn.Dropout(cfg.proj_drop)
        self.mlp_act = make_mlp_act(cfg.act_layer)
        self.num_heads = cfg.num_heads

    def _add_scale_and_drop_path(self, cfg: BlockCfg) -> None:
        # registered after the subclass's output projections: published checkpoints list their tensors in that order
        self.ls = make_layer_scale(cfg)
        self.drop_path = make_drop_path(cfg)

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

    def __init__(self, cfg: BlockCfg) -> None:
        super().__init__(cfg)
        if cfg.dim % cfg.num_heads:
            raise InvalidValueError(
                f"num_heads={cfg.num_heads} is invalid for embed_dim={cfg.dim}: embed_dim must be a multiple of it"
            )
        self.attn_out_proj = nn.Linear(cfg.dim, cfg.dim)
        self.mlp_out_proj = nn.Linear(self.mlp_hidden, cfg.dim)
        self._add_scale_and_drop_path(cfg)

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

    def __init__(self, cfg: BlockCfg) -> None:
        super().__init__(cfg)
        half = diff_head_dim(cfg.dim, cfg.num_heads)
        self.lambda_init = diff_lambda_init(check_int("depth", cfg.depth, ge=0))
        self.lambda_q1 = nn.Parameter(torch.empty(half))
        self.lambda_k1 = nn.Parameter(torch.empty(half))
        self.lambda_q2 = nn.Parameter(torch.empty(half))
        self.lambda_k2 = nn.Parameter(torch.empty(half))
        self.sub_norm = nn.RMSNorm(2 * half, eps=1e-5)
        self.out_proj = nn.Linear(cfg.dim + self.mlp_hidden, cfg.dim)
        self._add_scale_and_drop_path(cfg)
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


# the fields only the pre-norm and post-norm kinds read: a parallel block has its own attention and MLP
_SERIAL_ONLY = ("attn_layer", "mlp_layer", "norm_layer", "proj_bias", "scale_attn_norm", "scale_mlp_norm")


def make_block(block_fn: str, cfg: BlockCfg) -> nn.Module:
    """A block of kind block_fn (one of BLOCK_FNS) built from cfg; the parallel kinds refuse a cfg whose
    _SERIAL_ONLY fields are not BlockCfg's defaults, and 'res_post' an attention other than 'attn'."""
    check_choice("block_fn", block_fn, BLOCK_FNS)
    check_choice("attn_layer", cfg.attn_layer, ATTN_LAYERS)
    if block_fn == "res_post":
        if cfg.attn_layer != "attn":
            raise InvalidValueError(
                f"attn_layer={cfg.attn_layer!r} is invalid with block_fn='res_post': expected attn_layer='attn'"
            )
        return ResPostBlock(cfg)
    if block_fn == "block":
        return Block(cfg)
    defaults = attrs.fields_dict(BlockCfg)
    for key in _SERIAL_ONLY:
        value, expected = getattr(cfg, key), defaults[key].default
        if value != expected:
            raise InvalidValueError(
                f"{key}={value!r} is invalid with block_fn={block_fn!r}, whose attention and MLP are its own: "
                f"expected {key}={expected!r}, or block_fn='block'"
            )
    return ParallelScalingBlock(cfg) if block_fn == "parallel" else DiffParallelScalingBlock(cfg)
