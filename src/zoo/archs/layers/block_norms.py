"""The norm + activation layers a mobile block can be built with: batch norm, and the group-, layer- and
EvoNorm-S0 forms of the reference's test models (test_efficientnet_gn/_ln/_evos).

State-dict names follow timm 1.0.31 (weight, bias; EvoNorm's v), so those checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers.norm_act import BatchNormAct2d, make_act
from zoo.domain.checks import check_choice
from zoo.domain.errors import InvalidValueError

__all__ = ["BLOCK_NORMS", "EvoNorm2dS0", "GroupNormAct", "LayerNormAct2d", "make_block_norm"]

BLOCK_NORMS: tuple[str, ...] = ("batchnorm", "groupnorm", "layernorm", "evonorm")
GROUP_SIZE = 8  # channels per group of the reference's group-norm and EvoNorm test models


def _groups(chs: int) -> int:
    if chs % GROUP_SIZE:
        raise InvalidValueError(f"{chs} channels is invalid for a grouped norm: expected a multiple of {GROUP_SIZE}")
    return chs // GROUP_SIZE


class GroupNormAct(nn.GroupNorm):
    """Group norm (groups of 8 channels), then an activation (`act`) or none."""

    def __init__(self, chs: int, eps: float = 1e-5, *, act_layer: str = "relu", apply_act: bool = True) -> None:
        super().__init__(_groups(chs), chs, eps=eps)
        self.act: nn.Module = make_act(act_layer) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))
        return out


class LayerNormAct2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map, then an activation (`act`) or none."""

    def __init__(self, chs: int, eps: float = 1e-5, *, act_layer: str = "relu", apply_act: bool = True) -> None:
        super().__init__(chs, eps=eps)
        self.act: nn.Module = make_act(act_layer) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        out: torch.Tensor = self.act(x.permute(0, 3, 1, 2))
        return out


def _group_std(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    b, c, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    grouped = x.reshape(b, groups, c // groups, h, w)
    std = grouped.var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(eps).sqrt()
    return std.expand(grouped.shape).reshape(b, c, h, w)


class EvoNorm2dS0(nn.Module):
    """EvoNorm-S0 (Liu et al., 2020): x * sigmoid(v * x) over the group std (groups of 8), then an affine.

    Its non-linearity is its own: without apply_act (no v) it is the affine alone, as in the reference.
    """

    def __init__(self, chs: int, eps: float = 1e-5, *, apply_act: bool = True) -> None:
        super().__init__()
        self.groups = _groups(chs)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(chs))
        self.bias = nn.Parameter(torch.zeros(chs))
        self.v: nn.Parameter | None = nn.Parameter(torch.ones(chs)) if apply_act else None

    def reset_parameters(self) -> None:
        """Unit scale and v, zero shift."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.v is not None:
            nn.init.ones_(self.v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        if self.v is not None:
            x = x * (x * self.v.view(shape)).sigmoid() / _group_std(x, self.groups, self.eps)
        return x * self.weight.view(shape) + self.bias.view(shape)


def make_block_norm(kind: str, chs: int, eps: float, *, act_layer: str, apply_act: bool = True) -> nn.Module:
    """A norm + activation of kind (one of BLOCK_NORMS) over chs channels."""
    check_choice("norm_layer", kind, BLOCK_NORMS)
    if kind == "groupnorm":
        return GroupNormAct(chs, eps, act_layer=act_layer, apply_act=apply_act)
    if kind == "layernorm":
        return LayerNormAct2d(chs, eps, act_layer=act_layer, apply_act=apply_act)
    if kind == "evonorm":
        return EvoNorm2dS0(chs, eps, apply_act=apply_act)
    return BatchNormAct2d(chs, eps, apply_act=apply_act, act_layer=act_layer)
