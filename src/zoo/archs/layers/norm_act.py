"""Convolution, normalisation and activation: batch norm fused with its activation, and conv + norm + act."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers.helpers import get_padding
from zoo.domain.checks import check_choice
from zoo.domain.errors import InvalidValueError

__all__ = ["ACT_LAYERS", "NORM_LAYERS", "BatchNormAct2d", "ConvNormAct", "InPlaceAbn2d", "make_act", "make_norm_act"]

ACT_LAYERS: tuple[str, ...] = ("relu", "leaky_relu", "silu", "hard_swish", "relu6", "gelu")
NORM_LAYERS: tuple[str, ...] = ("batchnorm", "iabn")
LEAKY_SLOPE = 0.01


def make_act(act_layer: str, inplace: bool = True) -> nn.Module:
    """An activation by name: 'relu', 'leaky_relu' (slope 0.01), 'silu' (swish), 'hard_swish', 'relu6' or 'gelu'.

    GELU (the exact, erf form) has no in-place variant, so inplace does not apply to it.
    """
    check_choice("act_layer", act_layer, ACT_LAYERS)
    if act_layer == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=inplace)
    if act_layer == "silu":
        return nn.SiLU(inplace=inplace)
    if act_layer == "hard_swish":
        return nn.Hardswish(inplace=inplace)
    if act_layer == "relu6":
        return nn.ReLU6(inplace=inplace)
    if act_layer == "gelu":
        return nn.GELU()
    return nn.ReLU(inplace=inplace)


class BatchNormAct2d(nn.BatchNorm2d):
    """Batch norm followed by an activation (one of ACT_LAYERS, or none), in one module.

    Its state_dict is a plain BatchNorm2d's (weight, bias, running stats), so the activation adds no keys.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        *,
        apply_act: bool = True,
        inplace: bool = True,
        act_layer: str = "relu",
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.act: nn.Module = make_act(act_layer, inplace) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written out (not super().forward) so that TorchScript compiles it; the same arithmetic as BatchNorm2d
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            tracked = self.num_batches_tracked
            if tracked is not None:
                tracked.add_(1)
                if self.momentum is None:
                    momentum = 1.0 / float(tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        x = F.batch_norm(
            x,
            self.running_mean if keep_stats else None,
            self.running_var if keep_stats else None,
            self.weight,
            self.bias,
            use_batch_stats,
            momentum,
            self.eps,
        )
        out: torch.Tensor = self.act(x)
        return out


class InPlaceAbn2d(nn.Module):
    """In-place activated batch norm's layout and math in pure PyTorch: batch norm, then leaky ReLU or nothing.

    It holds weight, bias, running_mean and running_var and no num_batches_tracked (the original CUDA
    module kept no counter), so checkpoints of models built on it load unchanged.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *, apply_act: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.running_mean: torch.Tensor
        self.running_var: torch.Tensor
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.act: nn.Module = nn.LeakyReLU(LEAKY_SLOPE, inplace=True) if apply_act else nn.Identity()

    def reset_parameters(self) -> None:
        """Unit scale, zero shift, and the running statistics of a fresh batch norm."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.running_mean)
        nn.init.ones_(self.running_var)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
        )
        out: torch.Tensor = self.act(x)
        return out

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


def make_norm_act(
    norm_layer: str,
    num_features: int,
    *,
    apply_act: bool = True,
    act_layer: str | None = None,
    eps: float = 1e-5,
    momentum: float = 0.1,
) -> nn.Module:
    """A norm + activation module by name: 'batchnorm' (BatchNormAct2d) or 'iabn' (InPlaceAbn2d, leaky ReLU only).

    act_layer None takes the norm's own: ReLU for batch norm, leaky ReLU for in-place ABN.
    """
    check_choice("norm_layer", norm_layer, NORM_LAYERS)
    if act_layer is None:
        act_layer = "leaky_relu" if norm_layer == "iabn" else "relu"
    check_choice("act_layer", act_layer, ACT_LAYERS)
    if norm_layer == "iabn":
        if apply_act and act_layer != "leaky_relu":
            raise InvalidValueError(f"act_layer={act_layer!r} is invalid with norm_layer='iabn': expected 'leaky_relu'")
        return InPlaceAbn2d(num_features, eps=eps, momentum=momentum, apply_act=apply_act)
    return BatchNormAct2d(num_features, eps=eps, momentum=momentum, apply_act=apply_act, act_layer=act_layer)


class ConvNormAct(nn.Module):
    """A bias-free convolution (`conv`), then a norm with an optional activation (`bn`, see make_norm_act).

    padding None is the symmetric padding that keeps the size at stride 1 (get_padding); an int sets it.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        *,
        apply_act: bool = True,
        eps: float = 1e-5,
        momentum: float = 0.1,
        groups: int = 1,
        act_layer: str | None = None,
        norm_layer: str = "batchnorm",
        padding: int | None = None,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = get_padding(kernel_size, stride, dilation)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation, groups=groups, bias=False)
        self.bn = make_norm_act(
            norm_layer, out_chs, apply_act=apply_act, act_layer=act_layer, eps=eps, momentum=momentum
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.conv(x))
        return out
