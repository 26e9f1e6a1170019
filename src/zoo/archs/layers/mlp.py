"""Transformer MLPs: two linear layers around an activation (Mlp), or a gated variant (GluMlp: value and gate
packed in one fc1; SwiGLU: the gate in fc1_g, the value in fc1_x), with dropout.

Parameters sit under fc1/fc2 (fc1_g/fc1_x/fc2), as published ViT checkpoints have them.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.domain.checks import check_choice
from zoo.domain.errors import InvalidValueError

__all__ = ["MLP_ACTS", "GluMlp", "Mlp", "QuickGELU", "SwiGLU", "make_mlp_act"]

# the activations a transformer MLP takes by name: exact GELU, its tanh approximation, CLIP's sigmoid
# approximation (QuickGELU) and SiLU
MLP_ACTS: tuple[str, ...] = ("gelu", "gelu_tanh", "quick_gelu", "silu")


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP models were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_mlp_act(act_layer: str) -> nn.Module:
    """An MLP activation by name (one of MLP_ACTS)."""
    check_choice("act_layer", act_layer, MLP_ACTS)
    if act_layer == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if act_layer == "quick_gelu":
        return QuickGELU()
    if act_layer == "silu":
        return nn.SiLU()
    return nn.GELU()


class Mlp(nn.Module):
    """fc1, activation (GELU by default), dropout, fc2, dropout: the feed-forward half of a transformer block.

    norm, when given, normalises the hidden activations before fc2 (BEiT-3's scaled MLP norm).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        bias: bool = True,
        drop: float = 0.0,
        act_layer: str = "gelu",
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = make_mlp_act(act_layer)
        self.drop1 = nn.Dropout(drop)
        self.norm: nn.Module = nn.Identity() if norm is None else norm
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))
        return out


class GluMlp(nn.Module):
    """A gated MLP with both halves in one fc1: act(first half) * second half, then fc2 (SwiGLU with silu).

    hidden_features is fc1's width, so fc2 takes half of it (it must be even).
    """

    def __init__(
        self, in_features: int, hidden_features: int, *, bias: bool = True, drop: float = 0.0, act_layer: str = "silu"
    ) -> None:
        super().__init__()
        if hidden_features % 2:
            raise InvalidValueError(
                f"a gated MLP's hidden width must be even (it is split into a value and a gate), got {hidden_features}"
            )
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = make_mlp_act(act_layer)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features // 2, in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated, value = self.fc1(x).chunk(2, dim=-1)
        out: torch.Tensor = self.drop2(self.fc2(self.drop1(self.act(gated) * value)))
        return out


class SwiGLU(nn.Module):
    """A gated MLP with the gate and the value in two linears: fc2(act(fc1_g(x)) * fc1_x(x)), with dropout.

    hidden_features is the width of each of fc1_g and fc1_x (and fc2's input); act is SiLU by default.
    norm, when given, normalises the gated hidden activations before fc2.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        bias: bool = True,
        drop: float = 0.0,
        act_layer: str = "silu",
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.fc1_g = nn.Linear(in_features, hidden_features, bias=bias)
        self.fc1_x = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = make_mlp_act(act_layer)
        self.drop1 = nn.Dropout(drop)
        self.norm: nn.Module = nn.Identity() if norm is None else norm
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1_g(x)) * self.fc1_x(x)
        out: torch.Tensor = self.drop2(self.fc2(self.norm(self.drop1(x))))
        return out
