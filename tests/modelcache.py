"""Registered models built once per test session, shared by the property modules that only read them.

Building is the slow part of the property suites; a test that changes a model works on a copy. The
suites feed 32-64 px inputs: a model built for one image size (ViT) is built to take any size.
"""

from __future__ import annotations

import collections
import copy
import ctypes
import ctypes.util
import gc
from typing import Any, TypeVar

import torch
from torch import nn

import zoo
from tiers import build_kwargs
from zoo.archs.base import ZooModule
from zoo.domain.values import FEATURE_CLASSES, FeatureCfg, FeatureInfo
from zoo.services.builder import constructor_params
from zoo.services.features import FeatureFactory


def small_input_kwargs(name: str) -> dict[str, Any]:
    """Model keywords that let name run on the suites' small inputs of any size (none for most models).

    A token model built for one image size takes others with dynamic_img_size (position embeddings
    resampled per input) and dynamic_img_pad (padded to whole patches); its weights keep their shapes.
    """
    takes = constructor_params(zoo.api.default_zoo().get_spec(name)) or ()
    return {"dynamic_img_size": True, "dynamic_img_pad": True} if "dynamic_img_size" in takes else {}


# What the models kept built may hold at once, in bytes of parameters and buffers. The test modules that
# visit every model run one model's tests together (conftest orders them so), so the models a module
# is done with go first, and a worker holds a few models, not all 58 (about 10 GB, twice with two).
BUDGET = 2 * 1024**3
_built: collections.OrderedDict[str, ZooModule] = collections.OrderedDict()


def _find_malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None  # glibc only
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def give_back_memory() -> None:
    """Free what is garbage now and hand the allocator's free memory back to the system (glibc's malloc_trim).

    glibc keeps the memory a freed tensor of up to 32 MB held for the next allocation, scattered among live
    ones: a worker that visits many models would hold the sum of their high-water marks (in one process, the
    drawn tier over every name rose to 8 GB resident without this, against 0.6 GB of live models).
    """
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _size(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def drawn_kwargs(name: str) -> dict[str, Any]:
    """The model keywords the drawn tier builds name with: small_input_kwargs and, for a model above the
    parameter budget, its reduction's (tiers.plan); skips the test, saying why, where there is none."""
    return {**small_input_kwargs(name), **build_kwargs(name)}


def built(name: str) -> ZooModule:
    """The model of a registered name (with drawn_kwargs), seeded and in eval mode. Do not modify it.

    Built once and kept while the models kept stay within BUDGET, the least recently used going first.
    """
    kept = _built.get(name)
    if kept is not None:
        _built.move_to_end(name)
        return kept
    kwargs = drawn_kwargs(name)
    give_back_memory()  # what the tests of the models before left (conftest.py runs one model's tests together)
    torch.manual_seed(0)
    made: ZooModule = zoo.create_model(name, **kwargs)
    model = made.eval()
    _built[name] = model
    while len(_built) > 1 and sum(_size(m) for m in _built.values()) > BUDGET:
        _built.popitem(last=False)
    return model


def forget_built() -> None:
    """Drop every model built() keeps, and give their memory back to the system."""
    _built.clear()
    give_back_memory()


M = TypeVar("M", bound=ZooModule)


def built_as(name: str, cls: type[M]) -> M:
    """built(name), checked to be of the family class cls (for the tests of one family)."""
    model = built(name)
    assert isinstance(model, cls), f"{name} is a {type(model).__name__}, not a {cls.__name__}"
    return model


def shallow(model: M) -> M:
    """A copy sharing every submodule and tensor (as the feature extractors make them), cheap for any model size:
    what prune_intermediate_layers or reset_classifier replace on it stays the copy's own."""
    clone = copy.copy(model)
    for table in ("_modules", "_parameters", "_buffers"):
        object.__setattr__(clone, table, dict(getattr(model, table)))
    return clone


def served(model: object) -> tuple[str, ...]:
    """The feature extractor strategies a model (or its class) serves (a token model: 'getter' only)."""
    kinds: tuple[str, ...] = getattr(model, "feature_classes", FEATURE_CLASSES)
    return kinds


def as_map(model: nn.Module, feats: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """forward_features' output for an height x width input as an NCHW map.

    A convolutional model's map as is; a token model's [B, prefix + h * w, C] tokens with the prefix
    (its num_prefix_tokens) dropped and the patch tokens laid out on the h x w grid (rounded up: padded),
    or the grid its patch embedding says (a size not a whole number of patches, unpadded, drops the rest).
    """
    if feats.ndim == 4:
        return feats
    info: list[FeatureInfo] = getattr(model, "feature_info")  # noqa: B009  # every zoo model has it; nn.Module's typing does not say so
    reduction = info[-1].reduction
    h, w = -(-height // reduction), -(-width // reduction)
    feat_size = getattr(getattr(model, "patch_embed", None), "feat_size", None)
    if callable(feat_size):
        h, w = feat_size(height, width)
    prefix = feats.shape[1] - h * w
    assert prefix == getattr(model, "num_prefix_tokens", 0), (feats.shape, h, w)
    return feats[:, prefix:].reshape(feats.shape[0], h, w, feats.shape[-1]).permute(0, 3, 1, 2)


def taps_without_getter(
    model: nn.Module, cfg: FeatureCfg, x: torch.Tensor, *, norm: bool = False
) -> list[torch.Tensor]:
    """Every tap's output, computed without the model's forward_intermediates.

    The list extractor where the model serves it; otherwise forward hooks on the tap modules during
    forward_features, each output laid out by as_map (after the model's final norm, with norm).
    """
    if "list" in served(model) and not norm:
        return FeatureFactory().wrap(model, cfg, feature_cls="list").forward_taps(x)
    seen: list[torch.Tensor] = []
    modules = [model.get_submodule(t.module) for t in model.feature_info]  # type: ignore[union-attr]  # a zoo model
    handles = [m.register_forward_hook(lambda _m, _a, out: seen.append(out)) for m in modules]
    try:
        model.forward_features(x)  # type: ignore[operator]  # every zoo model has forward_features
    finally:
        for h in handles:
            h.remove()
    final_norm: nn.Module = model.get_submodule("norm") if norm else nn.Identity()
    return [as_map(model, final_norm(t), x.shape[-2], x.shape[-1]) for t in seen]
