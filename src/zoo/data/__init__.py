"""Preprocessing from a model's cfg: DataConfig, resolve_data_config, create_transform; ImageNet-1k labels.

resolve_data_config and DataConfig are pure values; create_transform needs torchvision and Pillow
(pip install 'zoo[data]'), imported only when it is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.data.config import DataConfig, resolve_data_config
from zoo.data.labels import ImageNetClass, imagenet_classes

if TYPE_CHECKING:
    from zoo.data.transforms import create_transform

__all__ = ["DataConfig", "ImageNetClass", "create_transform", "imagenet_classes", "resolve_data_config"]


def __getattr__(name: str) -> object:
    # torchvision loads on first use of a transform, so `import zoo.data` stays cheap without the extra
    if name == "create_transform":
        from zoo.data.transforms import create_transform

        return create_transform
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
