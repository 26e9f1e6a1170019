"""zoo: a typed model zoo for PyTorch image models."""

from __future__ import annotations

from zoo.api import (
    ModelZoo,
    convert_sync_batchnorm,
    create_model,
    fuse_for_inference,
    get_default_cfg,
    get_pretrained_cfg_value,
    is_model,
    list_models,
    list_modules,
    list_pretrained,
    save_pretrained,
)
from zoo.domain.errors import ZooError

__all__ = [
    "ModelZoo",
    "ZooError",
    "convert_sync_batchnorm",
    "create_model",
    "fuse_for_inference",
    "get_default_cfg",
    "get_pretrained_cfg_value",
    "is_model",
    "list_models",
    "list_modules",
    "list_pretrained",
    "save_pretrained",
]
__version__ = "0.1.0"
