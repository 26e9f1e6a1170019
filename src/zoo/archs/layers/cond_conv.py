"""Conditionally parameterised convolution (CondConv, Yang et al., 2019): a per-sample mix of expert kernels.

The experts' kernels are stored flattened, one row per expert (weight: num_experts x kernel elements), as
timm 1.0.31 stores them, so the checkpoints published for the CondConv EfficientNets load unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers.helpers import get_padding
from zoo.archs.layers.padding import pad_same

__all__ = ["CondConv2d"]


class CondConv2d(nn.Module):
    """A bias-free convolution whose kernel is routing_weights @ weight: each sample mixes the experts its own way.

    forward(x, routing_weights) takes routing_weights of shape (batch, num_experts). The batch is run as one
    grouped convolution (samples as groups), so one call convolves every sample with its own kernel.
    same_pad pads as TensorFlow does where the input size matters (stride 2), as Conv2dSame does.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        stride: int = 1,
        *,
        groups: int = 1,
        num_experts: int,
        same_pad: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = in_chs
        self.out_channels = out_chs
        self.kernel_size = (kernel_size, kernel_size)
        self.stride = (stride, stride)
        self.dilation = (dilation, dilation)
        self.groups = groups
        self.num_experts = num_experts
        # dynamic only where a static padding could differ from TF's (as create_conv2d decides)
        self.dynamic_pad = same_pad and not (stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0)
        self.padding = 0 if self.dynamic_pad else get_padding(kernel_size, stride, dilation)
        self.weight = nn.Parameter(torch.empty(num_experts, out_chs * (in_chs // groups) * kernel_size * kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert as a fresh Conv2d's weight (Kaiming-uniform over its fan-in)."""
        fan_in = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, routing_weights: torch.Tensor) -> torch.Tensor:
        # shapes by index, not unpacked, so that torch.fx can trace it
        b = x.shape[0]
        kernel = torch.matmul(routing_weights, self.weight).reshape(
            -1, self.in_channels // self.groups, self.kernel_size[0], self.kernel_size[1]
        )
        x = x.reshape(1, -1, x.shape[-2], x.shape[-1])
        if self.dynamic_pad:
            x = pad_same(x, list(self.kernel_size), list(self.stride), list(self.dilation))
        out = F.conv2d(x, kernel, None, self.stride, self.padding, self.dilation, self.groups * b)
        return out.reshape(b, self.out_channels, out.shape[-2], out.shape[-1])
