"""Differential attention (Differential Transformer, arXiv 2410.05258) over token sequences.

Each head's queries and keys are split in two halves; the two softmax attention maps they give are
subtracted, the second scaled by a learned lambda, which cancels attention noise common to both. The
core is shared by the attention module here and the ViT's parallel differential block (vit_parallel.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.domain.checks import check_int
from zoo.domain.errors import InvalidValueError

__all__ = ["DiffAttention", "diff_attend", "diff_head_dim", "diff_lambda", "diff_lambda_init"]


def diff_head_dim(dim: int, num_heads: int) -> int:
    """The width of each half of a head's queries and keys: dim / num_heads / 2 (InvalidValueError if not whole)."""
    check_int("num_heads", num_heads, ge=1)
    if dim % (2 * num_heads):
        raise InvalidValueError(
            f"num_heads={num_heads} is invalid for differential attention over embed_dim={dim}: "
            "embed_dim must be a multiple of 2 * num_heads"
        )
    return dim // num_heads // 2


def diff_lambda_init(depth: int) -> float:
    """The lambda a block at depth (its index) starts from and adds to the learned part: 0.8 - 0.6 e^(-0.3 depth)."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


def diff_lambda(
    q1: torch.Tensor, k1: torch.Tensor, q2: torch.Tensor, k2: torch.Tensor, lambda_init: float
) -> torch.Tensor:
    """The scale of the second attention map: exp(q1 . k1) - exp(q2 . k2) + lambda_init (in float32)."""
    first = torch.exp(torch.sum(q1 * k1, dim=-1).float())
    second = torch.exp(torch.sum(q2 * k2, dim=-1).float())
    return first - second + lambda_init


def diff_attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor, num_heads: int, dropout_p: float
) -> torch.Tensor:
    """[B, N, C] queries, keys and values -> [B, heads, N, C / heads]: the two maps' difference applied to v.

    Head h's queries (and keys) are channels [h * C/heads, (h + 1) * C/heads), whose halves give the two maps.
    """
    b, n, c = q.shape[0], q.shape[1], q.shape[2]
    half = c // num_heads // 2
    qs = q.reshape(b, n, num_heads, 2, half).permute(0, 2, 3, 1, 4)  # [B, heads, 2, N, half]
    ks = k.reshape(b, n, num_heads, 2, half).permute(0, 2, 3, 1, 4)
    vs = v.reshape(b, n, num_heads, 2 * half).transpose(1, 2)  # [B, heads, N, 2 * half]
    # the scale is the halves' (1 / sqrt(half)), as scaled_dot_product_attention takes it from the queries' width
    first = F.scaled_dot_product_attention(qs[:, :, 0], ks[:, :, 0], vs, dropout_p=dropout_p)
    second = F.scaled_dot_product_attention(qs[:, :, 1], ks[:, :, 1], vs, dropout_p=dropout_p)
    return first - lam.type_as(q) * second


class DiffAttention(nn.Module):
    """Multi-head differential self-attention: a fused qkv projection, two attention maps per head, their
    difference normalised per head (sub_norm, an RMSNorm) and scaled by 1 - lambda_init, an output projection.

    Parameters sit where published checkpoints have them: qkv, proj, lambda_q1/k1/q2/k2, sub_norm.
    depth: the block's index, which sets lambda_init.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        depth: int = 0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = diff_head_dim(dim, num_heads)
        self.attn_drop = attn_drop
        self.lambda_init = diff_lambda_init(check_int("depth", depth, ge=0))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.lambda_q1 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_k1 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_q2 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_k2 = nn.Parameter(torch.empty(self.head_dim))
        self.sub_norm = nn.RMSNorm(2 * self.head_dim, eps=1e-5)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The lambda vectors N(0, 0.1) (the module's own tensors; its layers start as torch's)."""
        for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(p, std=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape[0], x.shape[1], x.shape[2]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        lam = diff_lambda(self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2, self.lambda_init)
        y = diff_attend(q, k, v, lam, self.num_heads, self.attn_drop if self.training else 0.0)
        y = self.sub_norm(y) * (1.0 - self.lambda_init)
        out: torch.Tensor = self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, c)))
        return out

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, lambda_init={self.lambda_init:.4f}, attn_drop={self.attn_drop}"
