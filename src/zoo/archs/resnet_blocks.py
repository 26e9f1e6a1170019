"""ResNet's own building blocks: the residual blocks, the shortcut projections, the stems and stem pools.

Module and parameter names follow timm 1.0.31's ResNet, so published checkpoints load unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.archs.layers import AvgPool2dSame, BlurPool2d, DropPath, create_aa, create_attn, get_padding, make_norm2d
from zoo.domain.errors import InvalidValueError

__all__ = ["BasicBlock", "Bottleneck", "make_downsample", "make_stem", "make_stem_pool"]


def _uses_aa(aa_layer: str | None, stride: int, dilation: int, first_dilation: int) -> bool:
    # the anti-aliasing pool takes over the stride of a downsampling block (or the step into a dilated stage)
    return bool(aa_layer) and (stride == 2 or first_dilation != dilation)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        cardinality: int = 1,
        base_width: int = 64,
        reduce_first: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        norm_layer: str = "batchnorm",
        attn_layer: str | None = None,
        attn_rd_ratio: float = 1.0 / 16,
        aa_layer: str | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise InvalidValueError(
                f"BasicBlock supports cardinality=1 and base_width=64 only, got {cardinality=}, {base_width=}"
            )
        first_planes = planes // reduce_first
        if first_planes < 1:
            raise InvalidValueError(f"block_reduce_first={reduce_first} is invalid: it leaves no channels of {planes}")
        outplanes = planes * self.expansion
        first_dilation = first_dilation or dilation
        use_aa = _uses_aa(aa_layer, stride, dilation, first_dilation)
        self.conv1 = nn.Conv2d(
            inplanes,
            first_planes,
            3,
            stride=1 if use_aa else stride,
            padding=first_dilation,
            dilation=first_dilation,
            bias=False,
        )
        self.bn1 = make_norm2d(norm_layer, first_planes)
        self.act1 = nn.ReLU(inplace=True)
        self.aa = create_aa(aa_layer, first_planes, stride, enable=use_aa)
        self.conv2 = nn.Conv2d(first_planes, outplanes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = make_norm2d(norm_layer, outplanes)
        self.se = create_attn(attn_layer, outplanes, rd_ratio=attn_rd_ratio)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Start the residual branch at zero so each block begins as an identity."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.aa(self.act1(self.bn1(self.conv1(x))))
        x = self.bn2(self.conv2(x))
        if self.se is not None:
            x = self.se(x)
        x = self.drop_path(x) + shortcut
        out: torch.Tensor = self.act2(x)
        return out


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped) and 1x1 expand convolutions with a residual (ResNet-50 and up)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        cardinality: int = 1,
        base_width: int = 64,
        reduce_first: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        norm_layer: str = "batchnorm",
        attn_layer: str | None = None,
        attn_rd_ratio: float = 1.0 / 16,
        aa_layer: str | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        first_planes = width // reduce_first
        if width < 1 or first_planes < 1 or first_planes % cardinality:
            raise InvalidValueError(
                f"planes={planes}, base_width={base_width}, cardinality={cardinality}, "
                f"block_reduce_first={reduce_first} is invalid: the grouped convolution needs "
                f"a positive multiple of {cardinality} channels on each side"
            )
        outplanes = planes * self.expansion
        first_dilation = first_dilation or dilation
        use_aa = _uses_aa(aa_layer, stride, dilation, first_dilation)
        self.conv1 = nn.Conv2d(inplanes, first_planes, 1, bias=False)
        self.bn1 = make_norm2d(norm_layer, first_planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            first_planes,
            width,
            3,
            stride=1 if use_aa else stride,
            padding=first_dilation,
            dilation=first_dilation,
            groups=cardinality,
            bias=False,
        )
        self.bn2 = make_norm2d(norm_layer, width)
        self.act2 = nn.ReLU(inplace=True)
        self.aa = create_aa(aa_layer, width, stride, enable=use_aa)
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = make_norm2d(norm_layer, outplanes)
        self.se = create_attn(attn_layer, outplanes, rd_ratio=attn_rd_ratio)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Start the residual branch at zero so each block begins as an identity."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.aa(self.act2(self.bn2(self.conv2(x))))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        x = self.drop_path(x) + shortcut
        out: torch.Tensor = self.act3(x)
        return out


def make_downsample(
    inplanes: int,
    outplanes: int,
    *,
    stride: int,
    dilation: int,
    first_dilation: int,
    avg_down: bool,
    kernel_size: int,
    norm_layer: str,
) -> nn.Module:
    """The shortcut projection: a strided conv (1x1, or kernel_size where it strides or dilates), or
    (ResNet-D) average pooling then a 1x1 conv; each followed by a norm."""
    if not avg_down:
        k = 1 if stride == 1 and dilation == 1 else kernel_size
        d = first_dilation if k > 1 else 1
        conv = nn.Conv2d(
            inplanes, outplanes, k, stride=stride, padding=get_padding(k, stride, d), dilation=d, bias=False
        )
        return nn.Sequential(conv, make_norm2d(norm_layer, outplanes))
    pool: nn.Module
    if stride == 1 and dilation == 1:
        pool = nn.Identity()
    elif stride == 1:
        pool = AvgPool2dSame(2)
    else:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    return nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, bias=False), make_norm2d(norm_layer, outplanes))


def make_stem(in_chans: int, stem_width: int, stem_type: str, norm_layer: str) -> tuple[nn.Module, int]:
    """The stem's convolution(s) (before bn1) and their output width.

    '' is one 7x7 conv to 64 channels; 'deep' three 3x3 convs of stem_width, stem_width, 2 * stem_width;
    'deep_tiered' the same with the first narrowed to 3/4 of stem_width (rounded down to a multiple of 3).
    """
    if not stem_type:
        return nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False), 64
    first = 3 * (stem_width // 4) if stem_type == "deep_tiered" else stem_width
    if first < 1:
        raise InvalidValueError(f"stem_width={stem_width} is invalid with stem_type={stem_type!r}: expected at least 4")
    out = stem_width * 2
    stem = nn.Sequential(
        nn.Conv2d(in_chans, first, 3, stride=2, padding=1, bias=False),
        make_norm2d(norm_layer, first),
        nn.ReLU(inplace=True),
        nn.Conv2d(first, stem_width, 3, padding=1, bias=False),
        make_norm2d(norm_layer, stem_width),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, out, 3, padding=1, bias=False),
    )
    return stem, out


def make_stem_pool(channels: int, *, replace_stem_pool: bool, aa_layer: str | None, norm_layer: str) -> nn.Module:
    """The stem's stride-2 step (named maxpool for the checkpoints): a 3x3 max pool, its anti-aliased
    form, or (ResNet-RS, replace_stem_pool) a strided 3x3 conv, norm and ReLU."""
    if replace_stem_pool:
        layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, stride=1 if aa_layer else 2, padding=1, bias=False)]
        if aa_layer:
            layers.append(create_aa(aa_layer, channels, 2))
        return nn.Sequential(*layers, make_norm2d(norm_layer, channels), nn.ReLU(inplace=True))
    if aa_layer == "avg":
        # rounds down, as the reference's stem does: the blocks after it carry odd sizes through unchanged
        return nn.AvgPool2d(2)
    if aa_layer == "blur":
        return nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), BlurPool2d(channels, stride=2))
    return nn.MaxPool2d(3, stride=2, padding=1)
