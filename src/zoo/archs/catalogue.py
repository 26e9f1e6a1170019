"""The built-in catalogue: which module defines which model names.

Kept as a static index so that listing names imports no architecture module; a test checks it
against the specs the modules really define.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from zoo.domain.values import ModelSpec

FAMILIES: dict[str, tuple[str, ...]] = {
    "zoo.archs.resnet": (
        "resnet18",
        "resnet26",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet18d",
        "resnet26d",
        "resnet34d",
        "resnet50d",
        "resnet101d",
        "resnet152d",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "wide_resnet50_2",
        "wide_resnet101_2",
        "seresnet50",
        "ecaresnet50d",
        "ecaresnet50d_pruned",
        "ecaresnet101d_pruned",
    ),
    "zoo.archs.densenet": (
        "densenet121",
        "densenetblur121d",
        "densenet121d",
        "densenet169",
        "densenet201",
        "densenet161",
        "densenet264",
        "densenet264d",
    ),
    "zoo.archs.xception": (
        "xception41",
        "xception65",
        "xception71",
        "xception41p",
        "xception65p",
    ),
    "zoo.archs.cspnet": (
        "cspresnet50",
        "cspresnet50d",
        "cspresnet50w",
        "cspresnext50",
        "cspresnext50_iabn",
        "cspdarknet53",
        "cspdarknet53_iabn",
        "darknet17",
        "darknet21",
        "darknet53",
    ),
    "zoo.archs.vit": (
        "vit_tiny_patch16_224",
        "vit_small_patch16_224",
        "vit_base_patch16_224",
    ),
    "zoo.archs.efficientnet": (
        "efficientnet_b0",
        "efficientnet_b1",
        "efficientnet_b2",
        "efficientnet_b3",
        "efficientnet_b1_pruned",
        "efficientnet_b2_pruned",
        "efficientnet_b3_pruned",
    ),
    "zoo.archs.mobilenetv3": ("mobilenetv3_large_100",),
    "zoo.archs.convnext": (
        "convnext_tiny",
        "convnext_small",
    ),
    "zoo.archs.regnet": (
        "regnetx_016",
        "regnety_016",
    ),
}


def load_family(module: str) -> Sequence[ModelSpec]:
    """Import a family module and return the specs it defines (its MODEL_SPECS)."""
    specs: Sequence[ModelSpec] = importlib.import_module(module).MODEL_SPECS
    return specs
