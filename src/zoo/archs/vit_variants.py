"""Vision Transformer variants' blocks and their initialisation: the residual post-norm block and the inits
that follow the plain one (a gated MLP's gate, a post-norm block's norms at init_values)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from zoo.archs.layers.mlp import GluMlp, SwiGLU
from zoo.archs.layers.norm import token_norm
from zoo.archs.vit_blocks import BlockCfg, block_attention, block_mlp, init_gate, make_drop_path

__all__ = ["ResPostBlock", "apply_late_inits", "late_inits"]


class ResPostBlock(nn.Module):
    """A residual post-norm transformer block: x + norm1(attention(x)), then x + norm2(mlp(x)).

    With init_values, the norms' weights start at it (a scale on each branch, as layer scale is elsewhere).
    """

    def __init__(self, cfg: BlockCfg) -> None:
        super().__init__()
        self.init_values = cfg.init_values
        self.attn = block_attention(cfg)
        self.norm1 = token_norm(cfg.norm_layer, cfg.dim, cfg.norm_eps)
        self.drop_path1 = make_drop_path(cfg)
        self.mlp = block_mlp(cfg)
        self.norm2 = token_norm(cfg.norm_layer, cfg.dim, cfg.norm_eps)
        self.drop_path2 = make_drop_path(cfg)
        self.init_norms()

    def init_norms(self) -> None:
        """The branch norms as torch starts them, their weights at init_values where given."""
        for norm in (self.norm1, self.norm2):
            norm.reset_parameters()
            if self.init_values is not None:
                nn.init.constant_(norm.weight, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.norm1(self.attn(x)))
        out: torch.Tensor = x + self.drop_path2(self.norm2(self.mlp(x)))
        return out


def _init_split_gate(fc1_g: nn.Linear) -> None:
    # SwiGLU's gate starts near zero (weight N(0, 1e-6)) with bias one, as the published models start it
    nn.init.normal_(fc1_g.weight, std=1e-6)
    if fc1_g.bias is not None:
        nn.init.ones_(fc1_g.bias)


def late_inits(model: nn.Module) -> dict[int, Callable[[], None]]:
    """The modules whose init follows their plain one, by id, each with that init: a gated MLP's gate linear,
    a post-norm block's norms (where it has init_values)."""
    late: dict[int, Callable[[], None]] = {}
    for m in model.modules():
        if isinstance(m, GluMlp):
            late[id(m.fc1)] = functools.partial(init_gate, m.fc1)
        elif isinstance(m, SwiGLU):
            late[id(m.fc1_g)] = functools.partial(_init_split_gate, m.fc1_g)
        elif isinstance(m, ResPostBlock):
            late[id(m.norm1)] = late[id(m.norm2)] = m.init_norms
    return late


def apply_late_inits(model: nn.Module) -> None:
    """Apply every late init of model (after its plain init has run)."""
    with torch.no_grad():
        for init in late_inits(model).values():
            init()
