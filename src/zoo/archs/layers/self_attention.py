"""Multi-head self-attention over token sequences (the conv attention modules live in attention.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.domain.checks import check_int
from zoo.domain.errors import InvalidValueError

__all__ = ["Attention"]


class Attention(nn.Module):
    """Multi-head self-attention: one fused qkv projection, scaled dot-product attention, an output projection.

    Parameters sit under qkv and proj, as published ViT checkpoints have them. norm, when given, normalises
    the attended values before proj (BEiT-3's scaled attention norm); proj_bias=False drops proj's bias.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        *,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        check_int("num_heads", num_heads, ge=1)
        if dim % num_heads:
            raise InvalidValueError(
                f"num_heads={num_heads} is invalid for embed_dim={dim}: embed_dim must be divisible by num_heads"
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm: nn.Module = nn.Identity() if norm is None else norm
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, c)
        out: torch.Tensor = self.proj_drop(self.proj(self.norm(x)))
        return out

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, attn_drop={self.attn_drop}"
