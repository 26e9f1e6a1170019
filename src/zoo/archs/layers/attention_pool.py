"""Attention pooling over tokens with a learned query (the 'map' head of SigLIP image towers).

Parameters sit under latent, q, kv, proj, norm and mlp, as published SigLIP checkpoints have them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers.mlp import Mlp
from zoo.domain.errors import InvalidValueError

__all__ = ["AttentionPoolLatent"]


class AttentionPoolLatent(nn.Module):
    """One learned latent query attends over the tokens; a residual MLP follows; returns [B, dim].

    q projects the latent, kv the tokens (one fused projection), proj the attended value; then
    x + mlp(norm(x)), with a LayerNorm of norm_eps.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, *, norm_eps: float = 1e-6, act_layer: str = "gelu"
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise InvalidValueError(
                f"num_heads={num_heads} is invalid for embed_dim={dim}: embed_dim must be divisible by num_heads"
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        self.reset_latent()

    def reset_latent(self) -> None:
        """The latent query drawn as published models start it: N(0, 1 / dim) cut at +-2 (absolute)."""
        nn.init.trunc_normal_(self.latent, std=self.latent.shape[-1] ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape[0], x.shape[1], x.shape[2]
        q = self.q(self.latent.expand(b, -1, -1)).reshape(b, 1, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = self.proj(x.transpose(1, 2).reshape(b, 1, c))
        x = x + self.mlp(self.norm(x))
        return x[:, 0]
