"""Applying a prune spec: rebuild the Conv/BatchNorm/Linear modules it resizes at the new widths.

Each resized module is swapped for a fresh module of the same kind and configuration at the new
widths, under the same name, so the state_dict layout equals the spec. Everything is checked first,
on a copy of the model whose tensors live on the meta device: a spec that does not fit raises
PruneSpecError naming the layer and the widths, and the model is left as it was.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import attrs
import torch
from torch import nn

from zoo.domain.errors import PruneSpecError
from zoo.domain.prune import PruneSpec
from zoo.domain.values import FeatureInfo
from zoo.services.pruner.probe import (
    CONVS,
    NORMS,
    RESIZABLE,
    Probe,
    meta_clone,
    own_tensors,
    probe_widths,
    set_module,
    stub_norms,
)

__all__ = ["apply_spec", "check_spec", "resizable"]


def _classifier_path(model: nn.Module) -> str | None:
    get = getattr(model, "get_classifier", None)
    if not callable(get):
        return None
    clf = get()
    return next((n for n, m in model.named_modules() if m is clf and n), None)


def _under(key: str, prefix: str | None) -> bool:
    return prefix is not None and (key == prefix or key.startswith(prefix + "."))


def _unknown(name: str, known: Sequence[str], what: str) -> PruneSpecError:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return PruneSpecError(f"prune spec entry {name!r} names {what} the model does not have{hint}")


# Builds one module at new widths: called with the device context the module must be built in.
_Factory = Callable[[], nn.Module]


def _conv_factory(name: str, old: nn.Conv1d | nn.Conv2d, shape: tuple[int, ...], *, keep_in: bool) -> _Factory:
    out_ch, in_per_group, *kernel = shape
    if keep_in and old.groups == 1:
        in_per_group = old.in_channels  # the stem reads the image: its width is in_chans, not the layout's
    old_kernel = tuple(old.kernel_size)
    padding: object = old.padding
    if tuple(kernel) != old_kernel:
        same = isinstance(old.padding, tuple) and all(
            p == d * (k - 1) // 2 for p, d, k in zip(old.padding, old.dilation, old_kernel, strict=True)
        )
        if not (isinstance(old, nn.Conv1d) and same and all(k % 2 for k in kernel)):
            raise PruneSpecError(
                f"prune spec gives layer {name!r} kernel {list(kernel)}, the model's is {list(old_kernel)}: "
                "pruning changes widths, not kernels"
            )
        # a channel-attention Conv1d (ECA) may take the kernel the published layout names, keeping 'same' padding
        padding = tuple(d * (k - 1) // 2 for d, k in zip(old.dilation, kernel, strict=True))
    groups = old.groups
    if groups == 1:
        in_ch = in_per_group
    elif groups == old.in_channels:  # depthwise: one group per input channel, possibly a channel multiplier
        mult = old.out_channels // old.groups
        if in_per_group != 1 or out_ch % mult:
            raise PruneSpecError(
                f"layer {name!r} is depthwise (groups = in_channels, {mult} output(s) per channel): the spec's "
                f"shape {list(shape)} needs [k*{mult}, 1, ...] to stay depthwise"
            )
        groups = in_ch = out_ch // mult
    else:
        in_ch = in_per_group * groups
        if out_ch % groups:
            raise PruneSpecError(
                f"layer {name!r} is a grouped conv with groups={groups}: the spec's {out_ch} output channels are "
                f"not divisible by {groups}; use a multiple of {groups}"
            )
    cls = type(old)
    bias = old.bias is not None
    dtype = old.weight.dtype

    def build() -> nn.Module:
        return cls(
            in_ch,
            out_ch,
            cast(int, tuple(kernel)),
            stride=cast(int, old.stride),
            padding=cast(int, padding),
            dilation=cast(int, old.dilation),
            groups=groups,
            bias=bias,
            padding_mode=old.padding_mode,
            dtype=dtype,
        )

    return build


def _norm_factory(old: nn.BatchNorm1d | nn.BatchNorm2d, shape: tuple[int, ...]) -> _Factory:
    if type(old) not in NORMS:
        return _norm_subclass_factory(old, shape[0])
    cls = type(old)
    dtype = old.weight.dtype if old.weight is not None else None

    def build() -> nn.Module:
        return cls(
            shape[0],
            eps=old.eps,
            momentum=old.momentum,
            affine=old.affine,
            track_running_stats=old.track_running_stats,
            dtype=dtype,
        )

    return build


def _norm_subclass_factory(old: nn.BatchNorm1d | nn.BatchNorm2d, width: int) -> _Factory:
    """A batch norm subclass (a norm fused with its activation) at a new width, built from a copy of it.

    Its constructor may take other arguments than BatchNorm's, so the copy keeps every setting and child
    (the activation) and only its per-channel tensors are made afresh, initialised as a new norm's.
    """
    own = list(own_tensors(old).items())
    dtype = old.weight.dtype if old.weight is not None else None

    def build() -> nn.Module:
        # the old tensors are not copied: the memo stands None in for each, replaced below
        memo: dict[int, object] = {id(t): None for _, t in own}
        new = copy.deepcopy(old, memo)
        new.num_features = width
        for name, t in own:
            if name == "num_batches_tracked":
                fresh = torch.zeros((), dtype=t.dtype)
            else:
                fresh = torch.empty(width, dtype=dtype if t.is_floating_point() else t.dtype)
            setattr(new, name, nn.Parameter(fresh, t.requires_grad) if isinstance(t, nn.Parameter) else fresh)
        new.reset_parameters()
        return new

    return build


def _linear_factory(old: nn.Linear, shape: tuple[int, ...], *, classifier_of: nn.Module | None) -> _Factory:
    out_features, in_features = shape[0], shape[1]
    if classifier_of is not None:
        # the classifier keeps the class count the model was built with, and reads the pooled features as the
        # model's pooling gives them (catavgmax doubles them); the spec's width is of the features
        out_features = old.out_features
        num_features = getattr(classifier_of, "num_features", None)
        if isinstance(num_features, int) and num_features > 0 and old.in_features % num_features == 0:
            in_features *= old.in_features // num_features
    bias = old.bias is not None
    dtype = old.weight.dtype

    def build() -> nn.Module:
        return nn.Linear(in_features, out_features, bias=bias, dtype=dtype)

    return build


@attrs.frozen
class _Plan:
    """The modules a spec resizes (path -> factory), checked against the model's structure."""

    factories: Mapping[str, _Factory]


def _plan(model: nn.Module, spec: PruneSpec) -> _Plan:
    modules = dict(model.named_modules())
    clf = _classifier_path(model)
    clf_module = modules.get(clf) if clf is not None else None
    stem = next((n for n, m in modules.items() if isinstance(m, nn.Conv2d)), None)
    by_module: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in spec.tensors:
        path, _, tensor = name.rpartition(".")
        if _under(path, clf) and not isinstance(clf_module, nn.Linear):
            continue  # the model was built without a classifier (num_classes=0): nothing to resize
        module = modules.get(path) if path else None
        if module is None:
            raise _unknown(name, list(model.state_dict()), "a layer")
        own = own_tensors(module)
        if tensor not in own:
            raise _unknown(name, [f"{path}.{t}" for t in own], "a tensor")
        have = own[tensor]
        if len(shape) != have.ndim:
            raise PruneSpecError(
                f"prune spec entry {name!r} has shape {list(shape)} of rank {len(shape)}; "
                f"the model's {name} has rank {have.ndim} ({list(have.shape)})"
            )
        by_module.setdefault(path, {})[tensor] = shape

    factories: dict[str, _Factory] = {}
    for path, shapes in by_module.items():
        module = modules[path]
        own = own_tensors(module)
        if all(tuple(own[t].shape) == s for t, s in shapes.items()):
            continue  # an entry equal to the model's shape leaves the module as it is
        if not resizable(module):
            raise PruneSpecError(
                f"prune spec resizes layer {path!r} of type {type(module).__name__}; only Conv1d/Conv2d, "
                "BatchNorm1d/2d and Linear layers (and subclasses that keep their constructor) can be resized"
            )
        key = "weight" if "weight" in shapes else next(iter(shapes))
        # widths come from the weight; a bias or statistic alone must agree with the weight it has now
        weight = shapes[key] if key == "weight" or "weight" not in own else (shapes[key][0], *own["weight"].shape[1:])
        if isinstance(module, CONVS):
            factories[path] = _conv_factory(path, module, weight, keep_in=path == stem)
        elif isinstance(module, NORMS):
            factories[path] = _norm_factory(module, weight)
        else:
            linear = cast(nn.Linear, module)
            factories[path] = _linear_factory(linear, weight, classifier_of=model if path == clf else None)
        # the stem's input width is in_chans, the classifier's output width the class count: both kept as built
        built_shape = (own["weight"] if "weight" in own else own[key]).shape
        _check_not_wider(f"{path}.{key}", weight, built_shape, skip=(path == clf, path == stem))
    _check_masks(model, spec, factories)
    return _Plan(factories=factories)


def _check_not_wider(entry: str, shape: Sequence[int], have: Sequence[int], *, skip: tuple[bool, bool]) -> None:
    """Pruning keeps channels: an output (dim 0) or input (dim 1) width past the layer's own is refused."""
    for dim, (what, skipped) in enumerate(zip(("output", "input"), skip, strict=True)):
        if not skipped and dim < min(len(shape), len(have)) and shape[dim] > have[dim]:
            raise PruneSpecError(
                f"prune spec entry {entry!r} gives {shape[dim]} {what} channels: expected 1 to {have[dim]}, the "
                "layer's width in the model (pruning removes channels, it cannot add them)"
            )


def _check_masks(model: nn.Module, spec: PruneSpec, factories: Mapping[str, _Factory]) -> None:
    """A residual-group record must name a layer and agree with its widths before and after."""
    if not spec.masks:
        return
    underscored = {n.replace(".", "_"): n for n, _ in model.named_modules() if n}
    for mask in spec.masks:
        path = underscored.get(mask.layer)
        if path is None:
            raise _unknown(f"{mask.layer}_M.weight", list(underscored), "a residual group of a layer")
        module = model.get_submodule(path)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise PruneSpecError(
                f"prune spec residual-group record {mask.layer}_M.weight names {path!r}, which has no weight"
            )
        kept = weight.shape[0]
        if path in factories:
            with torch.device("meta"):
                kept = _out_width(factories[path]())
        if (mask.original, mask.kept) != (weight.shape[0], kept):
            raise PruneSpecError(
                f"prune spec residual-group record {mask.layer}_M.weight says {path!r} keeps {mask.kept} of "
                f"{mask.original} channels, but the model has {weight.shape[0]} and the spec gives it {kept}"
            )


def resizable(module: nn.Module) -> bool:
    """Exactly a Conv/BatchNorm/Linear; a conv subclass built like its base (a 'same'-padding conv); a norm subclass."""
    cls = type(module)
    if cls in RESIZABLE or isinstance(module, NORMS):
        return True
    return isinstance(module, CONVS) and any(cls.__init__ is base.__init__ for base in CONVS)


def _out_width(module: nn.Module) -> int:
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else 0


def _build_real(old: nn.Module, factory: _Factory) -> nn.Module:
    weight = getattr(old, "weight", None)
    on_meta = isinstance(weight, torch.Tensor) and weight.is_meta
    if on_meta:
        # the pretrained path: parameters stay on meta for the checkpoint to fill, buffers are real
        from zoo.services.weights.meta import parameters_on_meta

        with parameters_on_meta():
            new = factory()
    else:
        device = weight.device if isinstance(weight, torch.Tensor) else torch.device("cpu")
        with torch.device(device):
            new = factory()
    new.train(old.training)
    return new


def check_spec(model: nn.Module, spec: PruneSpec) -> tuple[_Plan, Probe]:
    """Plan spec on model and probe the result on a meta copy; PruneSpecError unless it fits. model is unchanged."""
    plan = _plan(model, spec)
    clone = meta_clone(model)
    with torch.device("meta"):
        for path, factory in plan.factories.items():
            set_module(clone, path, factory())
    stub_norms(clone)
    infos = _feature_info(model)
    return plan, probe_widths(clone, [f.module for f in infos])


def apply_spec(model: nn.Module, spec: PruneSpec) -> nn.Module:
    """Resize model's layers to spec in place and return it; a spec that does not fit changes nothing."""
    plan, probe = check_spec(model, spec)
    # every layer is allocated before any is put in: a failure leaves the model as it was
    rebuilt = {path: _build_real(model.get_submodule(path), factory) for path, factory in plan.factories.items()}
    for path, new in rebuilt.items():
        set_module(model, path, new)
    _refresh_widths(model, probe)
    return model


def _feature_info(model: nn.Module) -> list[FeatureInfo]:
    infos = getattr(model, "feature_info", None)
    if isinstance(infos, list) and all(isinstance(f, FeatureInfo) for f in infos):
        return cast(list[FeatureInfo], infos)
    return []


def _refresh_widths(model: nn.Module, probe: Probe) -> None:
    infos = _feature_info(model)
    if infos:
        updated = [attrs.evolve(f, num_chs=probe.taps.get(f.module, f.num_chs)) for f in infos]
        object.__setattr__(model, "feature_info", updated)
    old = getattr(model, "num_features", None)
    if probe.num_features is not None and isinstance(old, int):
        if getattr(model, "head_hidden_size", None) == old:
            object.__setattr__(model, "head_hidden_size", probe.num_features)
        object.__setattr__(model, "num_features", probe.num_features)
