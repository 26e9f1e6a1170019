"""MobileNetV4's mobile multi-query attention block: one shared key and value head, optionally downsampled.

Module and parameter names follow timm 1.0.31 (norm; attn.query/key/value/output, each an nn.Sequential
ending in `proj`, key and value with `down_conv` + `norm` when strided; layer_scale.gamma), so the
checkpoints published for MobileNetV4's hybrid models load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers.drop import DropPath
from zoo.archs.layers.layer_scale import LayerScale2d
from zoo.archs.layers.norm_act import BatchNormAct2d
from zoo.archs.layers.padding import create_conv2d

__all__ = ["MobileAttention", "MultiQueryAttention2d"]


def _kv_branch(
    dim: int, out_dim: int, kernel: int, stride: int, eps: float, same_pad: bool, dilation: int
) -> nn.Sequential:
    branch = nn.Sequential()
    if stride > 1:
        down = create_conv2d(dim, dim, kernel, stride, dilation, groups=dim, same_pad=same_pad)
        branch.add_module("down_conv", down)
        branch.add_module("norm", nn.BatchNorm2d(dim, eps=eps))
    branch.add_module("proj", nn.Conv2d(dim, out_dim, 1, bias=False))
    return branch


class MultiQueryAttention2d(nn.Module):
    """Attention over an NCHW map: num_heads query heads share one key head and one value head of key_dim.

    With kv_stride > 1 the keys and values come from a map downsampled by a strided depthwise conv + norm,
    so the attention costs (H*W) x (H*W / kv_stride**2); dilation spaces that conv's taps.
    """

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, key_dim: int, kv_stride: int, kernel: int, eps: float,
        same_pad: bool, dilation: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.query = nn.Sequential()
        self.query.add_module("proj", nn.Conv2d(dim, num_heads * key_dim, 1, bias=False))
        self.key = _kv_branch(dim, key_dim, kernel, kv_stride, eps, same_pad, dilation)
        self.value = _kv_branch(dim, key_dim, kernel, kv_stride, eps, same_pad, dilation)
        self.output = nn.Sequential()
        self.output.add_module("proj", nn.Conv2d(key_dim * num_heads, dim_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        # queries: (B, heads, H*W, key_dim); key and value: (B, 1, P, key_dim), shared by every head
        q = self.query(x).reshape(b, self.num_heads, self.key_dim, h * w).transpose(-1, -2)
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)
        o = F.scaled_dot_product_attention(q, k, v)
        # (B, heads, H*W, key_dim) -> (B, heads * key_dim, H, W), heads outermost in the channels
        o = o.transpose(1, 2).reshape(b, h, w, self.num_heads * self.key_dim).permute(0, 3, 1, 2)
        out: torch.Tensor = self.output(o)
        return out


class MobileAttention(nn.Module):
    """norm (no activation), multi-query attention, layer scale; a residual where shapes allow."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        num_heads: int,
        key_dim: int,
        kv_stride: int,
        kernel: int,
        noskip: bool,
        drop_path_rate: float,
        eps: float,
        same_pad: bool,
        layer_scale: float | None,
        reduction: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        # the stride of its keys and values to the image (reduction: its input's), the deepest map it makes;
        # torch.export reads it (services.export.min_dynamic_size) where no tap is as deep
        self.deepest_reduction = reduction * kv_stride
        self.has_skip = in_chs == out_chs and not noskip
        self.norm = BatchNormAct2d(in_chs, eps, apply_act=False)
        self.attn = MultiQueryAttention2d(
            in_chs, out_chs, num_heads, key_dim, kv_stride, kernel, eps, same_pad, dilation
        )
        self.layer_scale: nn.Module = nn.Identity() if layer_scale is None else LayerScale2d(out_chs, layer_scale)
        self.drop_path: nn.Module = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer_scale(self.attn(self.norm(x)))
        if self.has_skip:
            y = self.drop_path(y) + x
        out: torch.Tensor = y
        return out
