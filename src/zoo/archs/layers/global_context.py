"""Global-context attention (GCNet, Cao et al., 2019) in its scaling form, as a channel gate for mobile blocks.

Module and parameter names follow timm 1.0.31 (conv_attn, mlp_scale.fc1/norm/fc2), so the checkpoints
published for gc_efficientnetv2_rw_t load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.archs.layers.norm import LayerNorm2d
from zoo.archs.layers.norm_act import make_act

__all__ = ["GcMlp", "GlobalContext"]


class GcMlp(nn.Module):
    """A 1x1 conv MLP with a LayerNorm over its hidden channels: fc1, norm, activation, fc2."""

    def __init__(self, chs: int, hidden: int, act_layer: str) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(chs, hidden, 1, bias=True)
        self.norm = LayerNorm2d(hidden)
        self.act = make_act(act_layer, inplace=False)
        self.fc2 = nn.Conv2d(hidden, chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.norm(self.fc1(x))))
        return out


class GlobalContext(nn.Module):
    """Attention-pooled context (softmax over positions of a 1-channel conv) through an MLP, gating the channels."""

    def __init__(self, chs: int, rd_chs: int, act_layer: str) -> None:
        super().__init__()
        self.conv_attn = nn.Conv2d(chs, 1, 1, bias=True)
        self.mlp_scale = GcMlp(chs, rd_chs, act_layer)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = torch.softmax(self.conv_attn(x).flatten(2), dim=-1).unsqueeze(3)  # (b, 1, h * w, 1)
        context = (x.flatten(2).unsqueeze(1) @ attn).squeeze(1).unsqueeze(-1)  # (b, c, 1, 1)
        out: torch.Tensor = x * self.gate(self.mlp_scale(context))
        return out
