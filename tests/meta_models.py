"""Registered models built on the meta device: their structure and every shape, with no memory and no init.

What the every-name tier (tests/meta) runs on. A build on meta costs the Python that constructs the
modules (about a tenth of a second for a ResNet-50, whatever its size); a forward on meta tensors
computes shapes only, and memoised() makes the forwards after the first cost little more than the
Python between the leaf modules.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import zoo
from zoo.api import ModelZoo
from zoo.archs.base import ZooModule
from zoo.domain.values import FeatureCfg
from zoo.services.features import FeatureExtractor, FeatureFactory
from zoo.services.weights.meta import _writes_values


class _SkipMetaWrites(TorchFunctionMode):
    """Skips each value write (an init's normal_, fill_, ...) to a meta tensor: there are no values to write.

    Under torch.device("meta") alone they run, some through torch's slow Python reference code (normal_).
    """

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: object,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
    ) -> object:
        target = args[0] if args else (kwargs or {}).get("tensor")
        if isinstance(target, torch.Tensor) and target.is_meta and _writes_values(func):
            return target
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """Build on the meta device (every parameter and buffer), skipping the inits' writes."""
    with torch.device("meta"), _SkipMetaWrites():
        yield


class _Recording(FeatureFactory):
    """The standard factory, keeping the classifier it last wrapped (create_model builds it, then wraps it)."""

    def __init__(self) -> None:
        super().__init__()
        self.wrapped: nn.Module | None = None

    def wrap(
        self,
        model: nn.Module,
        cfg: FeatureCfg,
        *,
        out_indices: Sequence[int] | None = None,
        feature_cls: str | None = None,
        out_map: Sequence[str] | None = None,
    ) -> FeatureExtractor:
        self.wrapped = model
        return super().wrap(model, cfg, out_indices=out_indices, feature_cls=feature_cls, out_map=out_map)


@attrs.frozen
class MetaBuild:
    """create_model(name, features_only=True) on meta: the extractor, and the classifier it wraps."""

    name: str
    classifier: ZooModule
    extractor: FeatureExtractor


_RECORDING = _Recording()


@functools.cache
def _recording_zoo() -> ModelZoo:
    return ModelZoo(registry=zoo.api.default_zoo().registry, feature_factory=_RECORDING)


def meta_build(name: str) -> MetaBuild:
    """name built once on meta as create_model(name, features_only=True) builds it: the classifier, then its
    default extractor (the standard Builder and FeatureFactory, the default zoo's registry)."""
    _RECORDING.wrapped = None
    with on_meta():
        extractor = _recording_zoo().create_model(name, features_only=True)
    classifier, _RECORDING.wrapped = _RECORDING.wrapped, None
    assert isinstance(classifier, ZooModule), f"{name}: create_model wrapped a {type(classifier).__name__}"
    return MetaBuild(name, classifier, extractor)


def _signature(value: object) -> Hashable:
    """What a module's meta output can depend on in one argument: a tensor's shape, strides, dtype; else the value."""
    if isinstance(value, torch.Tensor):
        if not value.is_meta:
            raise TypeError("not a meta tensor")
        return (value.shape, value.stride(), value.dtype)
    if isinstance(value, (tuple, list)):
        return (type(value), *map(_signature, value))
    hash(value)  # anything else must be hashable to be a key: TypeError otherwise (the call is then not memoised)
    return value


def _like(x: torch.Tensor) -> torch.Tensor:
    # torch.empty_strided, not empty_like: empty_like of a meta tensor takes a slow Python path
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")


def _check_per_channel(func: str, x: torch.Tensor, channels: int, *tensors: object) -> None:
    for t in tensors:
        if isinstance(t, torch.Tensor) and tuple(t.shape) != (channels,):
            raise RuntimeError(f"{func}: a {tuple(t.shape)} statistic or affine for input {tuple(x.shape)}")


def _batch_norm(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def batch_norm(
        input: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        *args: object,
        **kwargs: object,
    ) -> torch.Tensor:
        if not input.is_meta:
            return original(input, running_mean, running_var, weight, bias, *args, **kwargs)
        for t in (running_mean, running_var, weight, bias):
            if t is not None and tuple(t.shape) != (input.shape[1],):
                raise RuntimeError(f"batch_norm: a {tuple(t.shape)} statistic or affine for input {tuple(input.shape)}")
        return _like(input)

    return batch_norm


def _layer_norm(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def layer_norm(
        input: torch.Tensor,
        normalized_shape: Sequence[int],
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        *args: object,
        **kwargs: object,
    ) -> torch.Tensor:
        if not input.is_meta:
            return original(input, normalized_shape, weight, bias, *args, **kwargs)
        shape = tuple(int(d) for d in normalized_shape)
        if tuple(input.shape[-len(shape) :]) != shape:
            raise RuntimeError(f"layer_norm: normalized_shape {shape} for input {tuple(input.shape)}")
        for t in (weight, bias):
            if t is not None and tuple(t.shape) != shape:
                raise RuntimeError(f"layer_norm: a {tuple(t.shape)} affine for {shape}")
        return _like(input)

    return layer_norm


@contextlib.contextmanager
def _shape_rules() -> Iterator[None]:
    """F.batch_norm and F.layer_norm on meta inputs by their shape rule, checked as torch checks it, in C++ time.

    torch's own meta batch norm is its Python decomposition, a millisecond a call: most of what a first meta
    forward costs. Replaced in torch.nn.functional, where modules look them up at each call, for the block only.
    """
    saved = F.batch_norm, F.layer_norm
    F.batch_norm, F.layer_norm = _batch_norm(saved[0]), _layer_norm(saved[1])
    try:
        yield
    finally:
        F.batch_norm, F.layer_norm = saved


def _has_tap_below(path: str, taps: Sequence[str]) -> bool:
    return any(t.startswith(f"{path}.") for t in taps) if path else True


@contextlib.contextmanager
def memoised(model: ZooModule) -> Iterator[None]:
    """Within the block, each module of model with no feature tap below it returns, for meta inputs of shapes it
    saw before, the output it gave then. On meta an output's shape depends on nothing else, and the modules'
    Python (batch norm's shape rule is Python) is where a meta forward spends its time.

    A tap module itself is memoised too (its hooks still fire: only forward is replaced), the modules holding a
    tap run their own code every time, so every extractor's hooks see what an unmemoised forward shows them.
    A copy of a module (an extractor's pruned copy, copy.copy) runs its own forward: the memo goes by identity.
    """
    taps = [t.module for t in model.feature_info]
    chosen = {id(m): m for path, m in model.named_modules() if not _has_tap_below(path, taps)}
    memo: dict[Hashable, object] = {}

    def memo_forward(original: Callable[..., object]) -> Callable[..., object]:
        def forward(self: nn.Module, *args: object, **kwargs: object) -> object:
            if chosen.get(id(self)) is not self:
                return original(self, *args, **kwargs)
            try:
                state = (id(self), self.training, torch.is_grad_enabled())
                key = (state, _signature(args), _signature(tuple(sorted(kwargs.items()))))
            except TypeError:
                return original(self, *args, **kwargs)
            if key not in memo:
                memo[key] = original(self, *args, **kwargs)
            return memo[key]

        return forward

    patched: dict[type[nn.Module], Callable[..., object] | None] = {}
    try:
        for module in chosen.values():
            cls = type(module)
            if cls not in patched:
                # the class's own forward, if it defines one (else it inherits it: the attribute goes again after)
                patched[cls] = vars(cls).get("forward")
                cls.forward = memo_forward(cls.forward)
        with _shape_rules():
            yield
    finally:
        for cls, own in patched.items():
            if own is None:
                delattr(cls, "forward")
            else:
                cls.forward = own


def size(model: nn.Module) -> int:
    """Parameters and buffers of model, in elements (each shared tensor once)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() for t in tensors.values())


def meta_size(name: str, kwargs: Mapping[str, Any]) -> int:
    """size() of create_model(name, **kwargs), built on meta."""
    with on_meta():
        model = zoo.create_model(name, **kwargs)
    return size(model)
