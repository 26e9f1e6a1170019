"""The Pruner: rebuilds a model at a prune spec's widths, and derives specs from weight magnitudes.

Applying a spec swaps each Conv/BatchNorm/Linear it resizes for a fresh module of the same kind
and configuration at the new widths, under the same name, so the state_dict layout equals the
spec. Everything is checked first, on a copy of the model whose tensors live on the meta device:
a spec that does not fit raises PruneSpecError naming the layer and the widths, and the model is
left as it was.

Deriving a spec traces the model with torch.fx to find its channel spaces: a conv or linear output
starts one; norms, activations, pooling and channel gates keep it; an elementwise sum or product
joins the spaces it combines (a residual group is one space). Each prunable space keeps its
channels of largest L1 norm, and the kept weights are sliced from the original.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import attrs
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.overrides import TorchFunctionMode

from zoo.domain.checks import check_float
from zoo.domain.errors import PruneSpecError, ZooError
from zoo.domain.prune import PruneSpec, parse_prune_spec
from zoo.domain.values import FeatureInfo
from zoo.services.builder import image_size_built_for

__all__ = ["ChannelPruner", "ModelCost", "count_flops", "measure", "meta_clone"]

_CONVS = (nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_RESIZABLE = (*_CONVS, *_NORMS, nn.Linear)
_IMAGE_SIZE = 224  # shapes on the meta device cost nothing; a full-size input avoids collapsing tiny maps


# -- meta copies and shape probes ------------------------------------------------------------------


def meta_clone(model: nn.Module) -> nn.Module:
    """A deep copy of model whose parameters and buffers are on the meta device (no memory, no copy)."""
    memo: dict[int, object] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) not in memo:
            m = t.detach().to("meta")
            memo[id(t)] = nn.Parameter(m, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else m
    clone = copy.deepcopy(model, memo)
    clone.eval()
    return clone


class _NormWidth(nn.Module):
    """Stands in for a norm layer on a meta copy: keeps its width, computes nothing.

    Batch norm on the meta device goes through decompositions whose first use imports torch._dynamo
    (seconds); a shape probe only needs the width.
    """

    def __init__(self, num_features: int, stands_for: str) -> None:
        super().__init__()
        self.num_features = num_features
        self.stands_for = stands_for  # the class named in messages: the user's layer, not this stand-in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _stub_norms(clone: nn.Module) -> None:
    for path, m in list(clone.named_modules()):
        if isinstance(m, _NORMS) and path:
            _set_module(clone, path, _NormWidth(m.num_features, type(m).__name__))


def _input_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ZooError(f"{type(model).__name__} has no Conv2d: cannot tell how many input channels it takes")


def _meta_input(model: nn.Module) -> torch.Tensor:
    # a model built for one image size (a ViT's img_size) takes only that one
    height, width = image_size_built_for(model) or (_IMAGE_SIZE, _IMAGE_SIZE)
    return torch.empty(2, _input_channels(model), height, width, device="meta")


def _expected_width(module: nn.Module) -> tuple[int, int] | None:
    """(input dim, width) a layer needs its input to have, for the layers whose width a spec sets."""
    if isinstance(module, _CONVS):
        return 1, module.in_channels
    if isinstance(module, (*_NORMS, _NormWidth)):
        return 1, module.num_features
    if isinstance(module, nn.Linear):
        return -1, module.in_features
    return None


class _Lineage(TorchFunctionMode):
    """Tracks which layer produced each tensor through functional ops (torch.relu, x * gate, a + b).

    An elementwise op joining two paths of different widths (a residual sum) raises PruneSpecError
    naming both producers, their widths and the block the op runs in.
    """

    def __init__(self, producers: dict[int, str], keep: list[torch.Tensor], stack: list[str]) -> None:
        super().__init__()
        self.producers = producers
        self.keep = keep
        self.stack = stack

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: object,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
    ) -> object:
        wide = [a for a in args if isinstance(a, torch.Tensor) and a.ndim >= 2]
        try:
            out = func(*args, **(kwargs or {}))
        except RuntimeError as e:
            widths = {int(a.shape[1]) for a in wide}
            if len(wide) >= 2 and len(widths) > 1:
                where = next((n for n in reversed(self.stack) if n), "the model")
                paths = ", ".join(
                    f"{int(a.shape[1])} channels from {self.producers.get(id(a), 'an earlier op')!r}" for a in wide
                )
                raise PruneSpecError(
                    f"widths conflict inside layer {where!r}: {getattr(func, '__name__', func)} joins {paths}; "
                    "the paths of a residual sum (or another elementwise op) must keep equal widths"
                ) from e
            raise
        if isinstance(out, torch.Tensor) and out.ndim >= 2 and id(out) not in self.producers:
            for a in wide:
                if id(a) in self.producers and a.shape[1] == out.shape[1]:
                    self.producers[id(out)] = self.producers[id(a)]
                    self.keep.append(out)
                    break
        return out


@attrs.frozen
class _Probe:
    """What one meta forward of a (pruned) model showed: its tap widths and final feature width."""

    taps: Mapping[str, int]
    num_features: int | None


def _probe(model: nn.Module, taps: Sequence[str]) -> _Probe:
    """Run a meta tensor through a meta model; a width that does not fit raises PruneSpecError naming the layer."""
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    stack: list[str] = []
    producers: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # outputs stay alive so their ids keep naming their producers
    tap_widths: dict[str, int] = {}
    tap_set = set(taps)

    def pre(module: nn.Module, args: tuple[object, ...]) -> None:
        name = names.get(id(module), "")
        stack.append(name)
        need = _expected_width(module)
        x = args[0] if args else None
        if need is None or not isinstance(x, torch.Tensor) or x.ndim < 2:
            return
        dim, width = need
        if x.shape[dim] != width:
            src = producers.get(id(x))
            origin = f"from {src!r}" if src else "from the layer before it"
            kind = module.stands_for if isinstance(module, _NormWidth) else type(module).__name__
            sized = src is not None and isinstance(modules.get(src), (*_RESIZABLE, _NormWidth))
            entries = f"{name}.weight" + (f" and {src}.weight" if sized else "")
            raise PruneSpecError(
                f"widths conflict at layer {name!r} ({kind}): it takes {width} channels but "
                f"receives {x.shape[dim]} {origin}; make the two widths equal in the spec ({entries})"
            )

    def post(module: nn.Module, args: tuple[object, ...], out: object) -> None:
        name = stack.pop() if stack else ""
        if isinstance(out, torch.Tensor):
            if isinstance(module, (*_RESIZABLE, _NormWidth)) or id(out) not in producers:
                producers[id(out)] = name
                keep.append(out)
            if name in tap_set and out.ndim >= 2:
                tap_widths[name] = int(out.shape[1])

    handles = [h for m in model.modules() for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        x = _meta_input(model)
        num_features: int | None = None
        with torch.no_grad(), _Lineage(producers, keep, stack):
            forward_features = getattr(model, "forward_features", None)
            forward_head = getattr(model, "forward_head", None)
            if callable(forward_features) and callable(forward_head):
                feats = forward_features(x)
                if isinstance(feats, torch.Tensor):
                    num_features = int(feats.shape[1] if feats.ndim == 4 else feats.shape[-1])
                forward_head(feats)
            else:
                model(x)
    except PruneSpecError:
        raise
    except RuntimeError as e:
        where = next((n for n in reversed(stack) if n), "the model")
        first_line = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise PruneSpecError(f"the pruned widths do not fit inside layer {where!r}: {first_line}") from e
    finally:
        for h in handles:
            h.remove()
    return _Probe(taps=tap_widths, num_features=num_features)


# -- cost ------------------------------------------------------------------------------------------


@attrs.frozen
class ModelCost:
    """Parameters, multiply-adds per image and forward time of one model."""

    params: int
    flops: int
    seconds: float | None = None


def count_flops(model: nn.Module, image_size: int = _IMAGE_SIZE) -> int:
    """Multiply-adds of the model's Conv/Linear layers for one image, counted on a meta copy."""
    clone = meta_clone(model)
    _stub_norms(clone)
    total = 0

    def hook(module: nn.Module, args: tuple[object, ...], out: object) -> None:
        nonlocal total
        if not isinstance(out, torch.Tensor):
            return
        per_image = out.numel() // max(out.shape[0], 1)
        if isinstance(module, _CONVS):
            total += per_image * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            total += per_image * module.in_features

    handles = [m.register_forward_hook(hook) for m in clone.modules() if isinstance(m, (*_CONVS, nn.Linear))]
    try:
        with torch.no_grad():
            clone(torch.empty(1, _input_channels(clone), image_size, image_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


def measure(model: nn.Module, *, image_size: int = _IMAGE_SIZE, batch: int = 1, repeats: int = 5) -> ModelCost:
    """Parameters, multiply-adds and the median forward time (seconds, CPU, eval mode) of a model."""
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, image_size)
    x = torch.randn(batch, _input_channels(model), image_size, image_size)
    was_training = model.training
    model.eval()
    times: list[float] = []
    with torch.no_grad():
        model(x)  # warm-up: first calls pay for allocation
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    model.train(was_training)
    return ModelCost(params=params, flops=flops, seconds=sorted(times)[len(times) // 2])


# -- applying a spec -------------------------------------------------------------------------------


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
    if type(old) not in _NORMS:
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
    own = list(itertools.chain(old.named_parameters(recurse=False), old.named_buffers(recurse=False)))
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
        own = dict(itertools.chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False)))
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
        own = dict(itertools.chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False)))
        if all(tuple(own[t].shape) == s for t, s in shapes.items()):
            continue  # an entry equal to the model's shape leaves the module as it is
        if not _resizable(module):
            raise PruneSpecError(
                f"prune spec resizes layer {path!r} of type {type(module).__name__}; only Conv1d/Conv2d, "
                "BatchNorm1d/2d and Linear layers (and subclasses that keep their constructor) can be resized"
            )
        key = "weight" if "weight" in shapes else next(iter(shapes))
        # widths come from the weight; a bias or statistic alone must agree with the weight it has now
        weight = shapes[key] if key == "weight" or "weight" not in own else (shapes[key][0], *own["weight"].shape[1:])
        if isinstance(module, _CONVS):
            factories[path] = _conv_factory(path, module, weight, keep_in=path == stem)
        elif isinstance(module, _NORMS):
            factories[path] = _norm_factory(module, weight)
        else:
            linear = cast(nn.Linear, module)
            factories[path] = _linear_factory(linear, weight, classifier_of=model if path == clf else None)
        # the stem's input width is in_chans, the classifier's output width the class count: both kept as built
        have = (own["weight"] if "weight" in own else own[key]).shape
        _check_not_wider(f"{path}.{key}", weight, have, skip=(path == clf, path == stem))
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


def _resizable(module: nn.Module) -> bool:
    """Exactly a Conv/BatchNorm/Linear; a conv subclass built like its base (a 'same'-padding conv); a norm subclass."""
    cls = type(module)
    if cls in _RESIZABLE or isinstance(module, _NORMS):
        return True
    return isinstance(module, _CONVS) and any(cls.__init__ is base.__init__ for base in _CONVS)


def _out_width(module: nn.Module) -> int:
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else 0


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


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


class ChannelPruner:
    """The standard Pruner: applies prune specs, checks them, derives them from weight magnitudes."""

    def prune(self, model: nn.Module, spec: PruneSpec | str) -> nn.Module:
        """The Pruner protocol: apply the spec (a PruneSpec or its interchange text); see apply."""
        return self.apply(model, spec)

    def check(self, model: nn.Module, spec: PruneSpec) -> None:
        """Raise PruneSpecError unless spec fits model; the model is not changed."""
        self._checked(model, spec)

    def apply(self, model: nn.Module, spec: PruneSpec | str) -> nn.Module:
        """Resize model's layers to spec in place (same module names) and return it.

        feature_info channels, num_features and head_hidden_size follow the pruned widths. A spec
        that does not fit raises PruneSpecError before anything is changed.
        """
        if isinstance(spec, str):
            spec = parse_prune_spec(spec)
        elif not isinstance(spec, PruneSpec):
            raise PruneSpecError(f"prune spec {spec!r} is invalid: expected a PruneSpec or its text")
        plan, probe = self._checked(model, spec)
        # every layer is allocated before any is put in: a failure leaves the model as it was
        rebuilt = {path: _build_real(model.get_submodule(path), factory) for path, factory in plan.factories.items()}
        for path, new in rebuilt.items():
            _set_module(model, path, new)
        _refresh_widths(model, probe)
        return model

    def _checked(self, model: nn.Module, spec: PruneSpec) -> tuple[_Plan, _Probe]:
        plan = _plan(model, spec)
        clone = meta_clone(model)
        with torch.device("meta"):
            for path, factory in plan.factories.items():
                _set_module(clone, path, factory())
        _stub_norms(clone)
        infos = _feature_info(model)
        return plan, _probe(clone, [f.module for f in infos])

    def derive(self, model: nn.Module, ratio: float) -> tuple[PruneSpec, nn.Module]:
        """Prune a copy of model by ratio: keep each channel space's largest-L1 channels.

        Returns the spec (every Conv/BatchNorm/Linear weight's shape) and the pruned copy with the
        kept weights sliced from the original. ratio 0 keeps every channel. A model whose
        structure cannot be pruned raises ZooError naming the layer that blocks it.
        """
        ratio = check_float("ratio", ratio, ge=0.0, lt=1.0)
        spaces = _trace_spaces(model)
        keep = _choose_channels(model, spaces, ratio)
        sliced = _sliced_tensors(model, spaces, keep)
        spec = _layout_spec(model, sliced)
        # copy the model but not the tensors the slices replace: those start as meta placeholders, so the
        # rebuilt layers skip their init, and the slices are then assigned (no copy)
        owners = dict(model.named_modules())
        memo: dict[int, object] = {}
        for key in sliced:
            path, _, name = key.rpartition(".")
            owner = owners[path]
            t = dict(itertools.chain(owner.named_parameters(recurse=False), owner.named_buffers(recurse=False)))[name]
            placeholder = t.detach().to("meta")
            memo[id(t)] = nn.Parameter(placeholder, t.requires_grad) if isinstance(t, nn.Parameter) else placeholder
        pruned = copy.deepcopy(model, memo)
        self.apply(pruned, spec)
        pruned.load_state_dict(sliced, strict=False, assign=True)
        left = [k for k, v in pruned.state_dict().items() if v.is_meta]
        if left:  # every placeholder is one of the slices' keys; this would be a bug in the slicing
            raise ZooError(f"derive left {', '.join(left[:5])} without values")
        return spec, pruned


def _feature_info(model: nn.Module) -> list[FeatureInfo]:
    infos = getattr(model, "feature_info", None)
    if isinstance(infos, list) and all(isinstance(f, FeatureInfo) for f in infos):
        return cast(list[FeatureInfo], infos)
    return []


def _refresh_widths(model: nn.Module, probe: _Probe) -> None:
    infos = _feature_info(model)
    if infos:
        updated = [attrs.evolve(f, num_chs=probe.taps.get(f.module, f.num_chs)) for f in infos]
        object.__setattr__(model, "feature_info", updated)
    old = getattr(model, "num_features", None)
    if probe.num_features is not None and isinstance(old, int):
        if getattr(model, "head_hidden_size", None) == old:
            object.__setattr__(model, "head_hidden_size", probe.num_features)
        object.__setattr__(model, "num_features", probe.num_features)


# -- deriving a spec -------------------------------------------------------------------------------


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
        return min(ra, rb)


@attrs.define
class _Spaces:
    """Channel spaces of a traced model: which layer reads and writes which space."""

    uf: _UnionFind = attrs.field(factory=_UnionFind)
    # layer path -> (space of its input channels, space of its output channels)
    io: dict[str, tuple[int | None, int | None]] = attrs.field(factory=dict)
    blocked: dict[int, str] = attrs.field(factory=dict)

    def root(self, s: int | None) -> int | None:
        return None if s is None else self.uf.find(s)

    def block(self, s: int | None, why: str) -> None:
        if s is not None:
            self.blocked.setdefault(s, why)

    def is_blocked(self, s: int) -> str | None:
        r = self.uf.find(s)
        return next((why for b, why in self.blocked.items() if self.uf.find(b) == r), None)


# activations, pooling and other layers that keep each channel where it is and own no per-channel tensor
_KEEP_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SiLU,
    nn.GELU,
    nn.Mish,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_JOIN_OPS: frozenset[object] = frozenset(
    {operator.add, operator.mul, operator.sub, operator.truediv, operator.iadd, operator.imul}
    | {torch.add, torch.mul, torch.sub, torch.div}
    | {"add", "mul", "sub", "div", "add_", "mul_", "sub_", "div_"}
)
_KEEP_OPS: frozenset[object] = frozenset(
    {F.relu, F.relu6, F.silu, F.gelu, F.sigmoid, F.hardsigmoid, F.hardswish, F.leaky_relu, F.dropout, F.pad}
    | {F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.sigmoid, torch.relu}
    | {torch.tanh, torch.flatten}
    | {"sigmoid", "sigmoid_", "relu", "relu_", "tanh", "contiguous", "clone", "flatten", "mean", "amax", "sum"}
)
_SHAPE_OPS: frozenset[object] = frozenset({getattr, "size", "dim"})


def _is_width_free_gate(module: nn.Module) -> bool:
    """A module whose every weight is a 1-to-1 channel Conv1d (ECA): it works at any width and keeps channels."""
    weighted = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    return bool(weighted) and all(
        isinstance(m, nn.Conv1d) and m.in_channels == 1 and m.out_channels == 1 for m in weighted
    )


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # subclasses of the resizable layers (a norm fused with its activation, a 'same'-padding conv) are
        # followed as the layer they extend
        resizable_subclass = isinstance(m, _RESIZABLE) and _resizable(m)
        return resizable_subclass or _is_width_free_gate(m) or super().is_leaf_module(m, module_qualified_name)


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if isinstance(stack, Mapping) and stack:
        return str(list(stack.keys())[-1])
    return node.name


def _keeps_channel_dim(node: fx.Node) -> bool:
    """Whether a reduction or flatten leaves dim 1 as the channel dim."""
    target = node.target
    if target in ("flatten", torch.flatten):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return isinstance(start, int) and start == 1
    if target in ("mean", "amax", "sum"):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims_t = dims if isinstance(dims, (tuple, list)) else (dims,)
        return dims is not None and all(isinstance(d, int) and d not in (0, 1, -3, -4) for d in dims_t)
    return True


def _trace_spaces(model: nn.Module) -> _Spaces:
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, ...) on dynamic code
        raise ZooError(
            f"{type(model).__name__} cannot be traced to find its channels, so it cannot be pruned: {e}"
        ) from e
    modules = dict(model.named_modules())
    sp = _Spaces()
    space: dict[fx.Node, int | None] = {}

    def arg_spaces(node: fx.Node) -> list[int]:
        return [s for a in node.all_input_nodes if (s := space.get(a)) is not None]

    for node in graph.nodes:
        ins = arg_spaces(node)
        first = space.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "placeholder":
            s = sp.uf.new()
            sp.block(s, "the network input")
            space[node] = s
        elif node.op == "output":
            for s in ins:
                sp.block(s, "the network output")
        elif node.op == "get_attr":
            space[node] = None
        elif node.op == "call_module":
            path = str(node.target)
            module = modules[path]
            space[node] = _module_space(sp, path, module, first)
        elif node.target in _SHAPE_OPS or (node.target is operator.getitem and first is None):
            space[node] = None
        elif node.target in _JOIN_OPS:
            joined: int | None = None
            for s in ins:
                joined = s if joined is None else sp.uf.union(joined, s)
            space[node] = joined
        elif node.target in _KEEP_OPS and _keeps_channel_dim(node):
            space[node] = first
        elif not ins:
            space[node] = None
        else:
            raise ZooError(
                f"{type(model).__name__} cannot be pruned: layer {_where(node)!r} applies {node.target!r} "
                "to channels, and only convolutions, norms, activations, pooling, channel gates and "
                "elementwise sums/products can be followed"
            )
    return sp


def _module_space(sp: _Spaces, path: str, module: nn.Module, first: int | None) -> int | None:
    if isinstance(module, _CONVS) and module.groups > 1:
        depthwise = module.groups == module.in_channels == module.out_channels
        if depthwise:
            sp.io[path] = (first, first)
            return first
        out = sp.uf.new()
        why = f"grouped conv {path!r} (groups={module.groups})"
        sp.block(first, why)
        sp.block(out, why)
        sp.io[path] = (first, out)
        return out
    if isinstance(module, (*_CONVS, nn.Linear)):
        out = sp.uf.new()
        sp.io[path] = (first, out)
        return out
    if isinstance(module, _NORMS):
        sp.io[path] = (first, first)
        return first
    if isinstance(module, _KEEP_MODULES) or _is_width_free_gate(module):
        return first
    if isinstance(module, nn.Flatten) and module.start_dim == 1:
        return first
    if first is None:
        return None
    raise ZooError(
        f"{type(module).__name__} layer {path!r} blocks pruning: its effect on channels is unknown "
        "(only Conv/BatchNorm/Linear, activations, pooling and channel gates can be followed)"
    )


def _choose_channels(model: nn.Module, sp: _Spaces, ratio: float) -> dict[int, torch.Tensor]:
    """Space root -> sorted indices of the channels to keep, for every space that loses channels."""
    modules = dict(model.named_modules())
    scores: dict[int, torch.Tensor] = {}
    for path, (_, out) in sp.io.items():
        module = modules[path]
        if out is None or not isinstance(module, (*_CONVS, nn.Linear)) or sp.io[path][0] == out:
            continue  # channel-preserving layers (norms, depthwise convs) add no evidence of their own
        weight = module.weight.detach()
        l1 = torch.linalg.vector_norm(weight.flatten(1), ord=1, dim=1, dtype=torch.float64)
        r = sp.uf.find(out)
        scores[r] = scores[r] + l1 if r in scores else l1
    keep: dict[int, torch.Tensor] = {}
    for r, score in scores.items():
        if sp.is_blocked(r) is not None:
            continue
        width = score.numel()
        k = max(1, round(width * (1.0 - ratio)))
        if k == width:
            continue
        top = torch.topk(score, k, largest=True, sorted=False).indices
        keep[r] = torch.sort(top).values
    return keep


def _sliced_tensors(model: nn.Module, sp: _Spaces, keep: Mapping[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of every Conv/BatchNorm/Linear layer, sliced to the kept channels (state_dict keys)."""
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    for path, (s_in, s_out) in sp.io.items():
        module = modules[path]
        k_in = keep.get(sp.uf.find(s_in)) if s_in is not None else None
        k_out = keep.get(sp.uf.find(s_out)) if s_out is not None else None
        for name, t in itertools.chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False)):
            v = t.detach()
            if v.ndim >= 1 and k_out is not None:
                v = v.index_select(0, k_out.to(v.device))
            depthwise = isinstance(module, _CONVS) and module.groups > 1
            if name == "weight" and v.ndim >= 2 and k_in is not None and not depthwise:
                v = v.index_select(1, k_in.to(v.device))
            # the pruned copy owns its tensors: index_select made new ones, the rest are cloned
            out[f"{path}.{name}"] = v.clone() if v.data_ptr() == t.data_ptr() else v
    return out


def _layout_spec(model: nn.Module, sliced: Mapping[str, torch.Tensor]) -> PruneSpec:
    """One entry per Conv/BatchNorm/Linear weight, in state_dict order, as the published layouts list them."""
    entries: list[tuple[str, tuple[int, ...]]] = []
    for path, module in model.named_modules():
        if isinstance(module, _RESIZABLE) and isinstance(getattr(module, "weight", None), torch.Tensor):
            key = f"{path}.weight"
            entries.append((key, tuple(sliced[key].shape if key in sliced else module.weight.shape)))
    return PruneSpec(tuple(entries))
