"""Building blocks shared by the architecture families, one module per kind of block."""

from __future__ import annotations

from zoo.archs.layers.attention import EcaModule, SEModule, create_attn
from zoo.archs.layers.classifier import ClassifierHead, check_head, make_fc
from zoo.archs.layers.drop import DropPath, drop_path
from zoo.archs.layers.helpers import get_padding, is_scripting, make_divisible
from zoo.archs.layers.init import default_bias_, init_each_module, owns_state
from zoo.archs.layers.norm import NORM2D_LAYERS, make_norm2d
from zoo.archs.layers.norm_act import (
    ACT_LAYERS,
    NORM_LAYERS,
    BatchNormAct2d,
    ConvNormAct,
    InPlaceAbn2d,
    make_act,
    make_norm_act,
)
from zoo.archs.layers.pool import AA_LAYERS, POOL_TYPES, AvgPool2dSame, BlurPool2d, GlobalPool, create_aa
from zoo.archs.layers.sync_norm import SyncBatchNormAct, SyncInPlaceAbn, convert_sync_batchnorm
from zoo.archs.layers.taps import sequential_prefix, sequential_steps

__all__ = [
    "AA_LAYERS",
    "ACT_LAYERS",
    "NORM2D_LAYERS",
    "NORM_LAYERS",
    "POOL_TYPES",
    "AvgPool2dSame",
    "BatchNormAct2d",
    "BlurPool2d",
    "ClassifierHead",
    "ConvNormAct",
    "DropPath",
    "EcaModule",
    "GlobalPool",
    "InPlaceAbn2d",
    "SEModule",
    "SyncBatchNormAct",
    "SyncInPlaceAbn",
    "check_head",
    "convert_sync_batchnorm",
    "create_aa",
    "create_attn",
    "default_bias_",
    "drop_path",
    "get_padding",
    "init_each_module",
    "is_scripting",
    "make_act",
    "make_divisible",
    "make_fc",
    "make_norm2d",
    "make_norm_act",
    "owns_state",
    "sequential_prefix",
    "sequential_steps",
]
