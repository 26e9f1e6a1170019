"""zoo: a typed model zoo for PyTorch image models."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from zoo.api import (
    ModelZoo,
    convert_sync_batchnorm,
    create_model,
    fuse_for_inference,
    get_default_cfg,
    get_pretrained_cfg,
    get_pretrained_cfg_value,
    is_model,
    list_models,
    list_modules,
    list_pretrained,
    model_card,
    optimize_for_inference,
    save_pretrained,
    search_models,
)
from zoo.domain.errors import ZooError
from zoo.domain.values import DefaultCfg

if TYPE_CHECKING:
    from zoo import data, optim
    from zoo.archs.base import ZooModule
    from zoo.services.features import FeatureExtractor
    from zoo.services.registry import Registry

__all__ = [
    "DefaultCfg",
    "FeatureExtractor",
    "ModelZoo",
    "Registry",
    "ZooError",
    "ZooModule",
    "convert_sync_batchnorm",
    "create_model",
    "data",
    "fuse_for_inference",
    "get_default_cfg",
    "get_pretrained_cfg",
    "get_pretrained_cfg_value",
    "is_model",
    "list_models",
    "list_modules",
    "list_pretrained",
    "model_card",
    "optim",
    "optimize_for_inference",
    "save_pretrained",
    "search_models",
]
__version__ = "0.1.0"

# public classes whose modules import torch: imported on first use, so that `import zoo` stays cheap
_LAZY = {
    "FeatureExtractor": "zoo.services.features",
    "Registry": "zoo.services.registry",
    "ZooModule": "zoo.archs.base",
}
# subpackages reachable as attributes (`zoo.data.create_transform`), imported on first use
_SUBMODULES = ("data", "optim")


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return importlib.import_module(f"zoo.{name}")  # the import binds it on the package too
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
