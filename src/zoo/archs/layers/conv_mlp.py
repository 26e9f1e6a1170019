"""The two-layer pointwise MLP of convolutional blocks, as linear layers (channels-last) or 1x1 convolutions."""

from __future__ import annotations

import torch
from torch import nn

from zoo.archs.layers.grn import GlobalResponseNorm
from zoo.domain.checks import check_choice

__all__ = ["MLP_ACT_LAYERS", "PointwiseMlp", "make_mlp_act"]

# the activations make_mlp_act builds: 'gelu_tanh' is GELU's tanh approximation
MLP_ACT_LAYERS: tuple[str, ...] = ("gelu", "gelu_tanh", "silu", "relu")


def make_mlp_act(act_layer: str) -> nn.Module:
    """An MLP activation by name (one of MLP_ACT_LAYERS), never in place."""
    check_choice("act_layer", act_layer, MLP_ACT_LAYERS)
    if act_layer == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if act_layer == "silu":
        return nn.SiLU()
    if act_layer == "relu":
        return nn.ReLU()
    return nn.GELU()


class PointwiseMlp(nn.Module):
    """fc1, activation, optional global response norm (`grn`), fc2 at every position: nn.Linear on channels-last
    input, or 1x1 convs on NCHW (use_conv).

    Parameters live under fc1 and fc2 (and grn), so checkpoints of either form hold the same names.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        use_conv: bool = False,
        act_layer: str = "gelu",
        use_grn: bool = False,
    ) -> None:
        super().__init__()
        self.use_conv = use_conv
        self.fc1: nn.Module = (
            nn.Conv2d(in_features, hidden_features, 1) if use_conv else nn.Linear(in_features, hidden_features)
        )
        self.act = make_mlp_act(act_layer)
        self.grn: nn.Module = (
            GlobalResponseNorm(hidden_features, channels_last=not use_conv) if use_grn else nn.Identity()
        )
        self.fc2: nn.Module = (
            nn.Conv2d(hidden_features, in_features, 1) if use_conv else nn.Linear(hidden_features, in_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.grn(self.act(self.fc1(x))))
        return out
