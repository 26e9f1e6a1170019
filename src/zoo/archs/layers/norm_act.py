"""Convolution, normalisation and activation: batch norm fused with its activation, and conv + norm + act."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers.helpers import get_padding

__all__ = ["BatchNormAct2d", "ConvNormAct"]


class BatchNormAct2d(nn.BatchNorm2d):
    """Batch norm followed by an activation (ReLU, or none), in one module.

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
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.act: nn.Module = nn.ReLU(inplace=inplace) if apply_act else nn.Identity()

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


class ConvNormAct(nn.Module):
    """A bias-free convolution (`conv`), then batch norm with an optional ReLU (`bn`)."""

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
    ) -> None:
        super().__init__()
        padding = get_padding(kernel_size, stride, dilation)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation, bias=False)
        self.bn = BatchNormAct2d(out_chs, eps=eps, momentum=momentum, apply_act=apply_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.conv(x))
        return out
