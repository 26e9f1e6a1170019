"""Preprocessing from a model's cfg: DataConfig, resolve_data_config, create_transform; ImageNet-1k labels.

resolve_data_config, DataConfig and the constants are pure values; create_transform needs torchvision and
Pillow (pip install 'zoo[data]'), imported only when it is first used. The names and call shapes follow
the reference (timm.data): `create_transform(**resolve_data_config({}, model=model))` works as it does there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from zoo.data.augment_config import parse_auto_augment
from zoo.data.config import DataConfig, resolve_data_config, resolve_model_data_config
from zoo.data.constants import (
    DEFAULT_CROP_MODE,
    DEFAULT_CROP_PCT,
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_DPN_MEAN,
    IMAGENET_DPN_STD,
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)
from zoo.data.labels import ImageNetClass, imagenet_classes

if TYPE_CHECKING:
    from zoo.data.augment import RandAugment, RandomErasing
    from zoo.data.transforms import create_transform

__all__ = [
    "DEFAULT_CROP_MODE",
    "DEFAULT_CROP_PCT",
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "IMAGENET_DPN_MEAN",
    "IMAGENET_DPN_STD",
    "IMAGENET_INCEPTION_MEAN",
    "IMAGENET_INCEPTION_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "DataConfig",
    "ImageNetClass",
    "RandAugment",
    "RandomErasing",
    "create_transform",
    "imagenet_classes",
    "parse_auto_augment",
    "resolve_data_config",
    "resolve_model_data_config",
]

# names whose modules import torchvision: loaded on first use, so `import zoo.data` stays cheap without the extra
_LAZY = {
    "create_transform": "zoo.data.transforms",
    "RandAugment": "zoo.data.augment",
    "RandomErasing": "zoo.data.augment",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
    # transforms first: it is where a missing torchvision is reported with what to install
    importlib.import_module("zoo.data.transforms")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
