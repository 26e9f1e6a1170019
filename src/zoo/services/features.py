"""Feature extraction: a classifier becomes a multi-scale backbone (list, dict, hook or getter strategy)."""

from __future__ import annotations

import abc
import copy
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, cast, get_type_hints, overload

import attrs
import torch
import torch.fx
from torch import nn
from torch._jit_internal import is_scripting
from torch.utils.hooks import RemovableHandle

from zoo.domain.errors import (
    FeatureNotAvailableError,
    FeatureSurfaceError,
    InvalidFeatureRequestError,
    InvalidValueError,
)
from zoo.domain.features import describe_taps, take_indices, tap_positions
from zoo.domain.protocols import (
    ClassifierHead,
    FeatureForward,
    Intermediates,
    LayerPruning,
    Tapped,
    TapStrategies,
    lacking,
)
from zoo.domain.values import FEATURE_CLASSES, TAP_KEYS, DefaultCfg, FeatureCfg, FeatureInfo

__all__ = [
    "FeatureDictNet",
    "FeatureExtractor",
    "FeatureFactory",
    "FeatureGetterNet",
    "FeatureHookNet",
    "FeatureListNet",
    "FeatureTaps",
]


@attrs.frozen
class FeatureTaps:
    """A feature extractor's feature_info: every tap the model offers and the ones selected."""

    available: tuple[FeatureInfo, ...]
    out_indices: tuple[int, ...]

    def taps(self) -> tuple[FeatureInfo, ...]:
        """The selected taps, in network order."""
        return tuple(self.available[i] for i in self.out_indices)

    @overload
    def channels(self, idx: None = None) -> list[int]: ...
    @overload
    def channels(self, idx: int) -> int: ...
    @overload
    def channels(self, idx: Sequence[int]) -> list[int]: ...
    def channels(self, idx: int | Sequence[int] | None = None) -> int | list[int]:
        """Channels per selected tap; idx: one position among them (negatives from the end) or several."""
        return cast("int | list[int]", self.get("num_chs", idx))

    @overload
    def reduction(self, idx: None = None) -> list[int]: ...
    @overload
    def reduction(self, idx: int) -> int: ...
    @overload
    def reduction(self, idx: Sequence[int]) -> list[int]: ...
    def reduction(self, idx: int | Sequence[int] | None = None) -> int | list[int]:
        """Stride (input size / output size) per selected tap; idx as for channels."""
        return cast("int | list[int]", self.get("reduction", idx))

    @overload
    def module_name(self, idx: None = None) -> list[str]: ...
    @overload
    def module_name(self, idx: int) -> str: ...
    @overload
    def module_name(self, idx: Sequence[int]) -> list[str]: ...
    def module_name(self, idx: int | Sequence[int] | None = None) -> str | list[str]:
        """Dotted module path (in the classifier model) per selected tap; idx as for channels."""
        return cast("str | list[str]", self.get("module", idx))

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> object:
        """One key (num_chs, reduction, module) of the taps at idx: a value for an int, else a list of them."""
        if key not in TAP_KEYS:
            raise InvalidValueError(f"key={key!r} is invalid: expected one of {', '.join(map(repr, TAP_KEYS))}")
        picked = tap_positions(len(self), idx)
        taps = self.taps()
        return taps[picked][key] if isinstance(picked, int) else [taps[i][key] for i in picked]

    def get_dicts(
        self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None
    ) -> dict[str, object] | list[dict[str, object]]:
        """The taps at idx as dicts of keys (every key by default): one dict for an int idx, else a list."""
        wanted = TAP_KEYS if keys is None else tuple(keys)
        bad = [k for k in wanted if k not in TAP_KEYS]
        if bad or isinstance(keys, str):
            expected = ", ".join(map(repr, TAP_KEYS))
            raise InvalidValueError(f"keys={keys!r} is invalid: expected a sequence of {expected}")
        picked = tap_positions(len(self), idx)
        taps = self.taps()
        if isinstance(picked, int):
            return {k: taps[picked][k] for k in wanted}
        return [{k: taps[i][k] for k in wanted} for i in picked]

    def __len__(self) -> int:
        return len(self.out_indices)

    def __iter__(self) -> Iterator[FeatureInfo]:
        return iter(self.taps())

    def __getitem__(self, i: int) -> FeatureInfo:
        return self.taps()[i]


class FeatureExtractor(nn.Module, abc.ABC):
    """A model's multi-scale features; `feature_info` and `out_indices` describe the selected taps."""

    if TYPE_CHECKING:
        # for type checkers only: torch.jit.script would read class-level annotations as TorchScript types
        # set by the Builder: the cfg describing the model as built (no classifier)
        default_cfg: DefaultCfg
        pretrained_cfg: DefaultCfg

    def __init__(self, taps: FeatureTaps) -> None:
        super().__init__()
        self.feature_info = taps
        self.out_indices = taps.out_indices

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        forward = vars(cls).get("forward")
        if callable(forward):
            # torch.fx writes forward's annotations into the code it generates, where TorchScript reads them:
            # postponed ones (strings) would be names it cannot resolve, so a traced extractor could not be scripted
            forward.__annotations__ = get_type_hints(forward)

    @abc.abstractmethod
    def forward_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One tensor per selected tap, in network order (whatever forward's output format)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | dict[str, torch.Tensor]:
        return self.forward_taps(x)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor] | dict[str, torch.Tensor]:
        # typed wrapper: nn.Module.__call__ (hooks included) returns Any
        out: list[torch.Tensor] | dict[str, torch.Tensor] = super().__call__(x)
        return out


class _ListOutput(FeatureExtractor):
    """An extractor whose forward returns the list of tap outputs."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_taps(x)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = nn.Module.__call__(self, x)
        return out


class _TappedSequence(FeatureExtractor, nn.ModuleDict):
    """The model's top-level modules, re-sequenced and cut after the last selected tap.

    A ModuleDict of them, so that TorchScript can run them in order. A tap inside a module that is
    not an nn.Sequential (a residual block, say) cannot be a step boundary: a forward hook reads it
    while the step holding it runs, and such an extractor can be neither scripted nor traced.
    """

    def __init__(self, model: nn.Module, taps: FeatureTaps, *, flatten_sequential: bool) -> None:
        super().__init__(taps)
        steps = _resequence(model, "", [t.module for t in taps.available], flatten_sequential)
        position = {path: i for i, (path, _) in enumerate(steps)}
        selected = taps.module_name()
        where = {m: position[m] if m in position else _holding_step(m, steps) for m in selected}
        missing = [m for m, i in where.items() if i is None]
        if missing:
            raise InvalidFeatureRequestError(
                f"{type(model).__name__}: tap module(s) {missing} are not among the modules a list/dict extractor "
                f"runs in order ({', '.join(position)}); taps must be top-level modules, inside nn.Sequential "
                "containers with flatten_sequential, or inside other modules; feature_cls='hook' serves any tap"
            )
        order = [i for i in where.values() if i is not None]  # every one, as none is missing
        if order != sorted(order):
            raise InvalidFeatureRequestError(
                f"{type(model).__name__}: feature_info order {selected} disagrees with the module order"
            )
        # ModuleDict-style keys cannot hold '.', so a flattened 'stages.0' is registered as 'stages_0' (as timm does);
        # plain lists of str, as TorchScript reads them
        self._tap_keys = [m.replace(".", "_") for m in selected if m in position]
        self._tap_names = list(selected)
        self._nested = [m for m in selected if m not in position]
        self._hooked = len(self._nested) > 0  # a bool, as TorchScript reads it (an empty list has no type)
        self._recorder = _TapRecorder()
        if self._hooked:
            hooks = [
                _submodule(model, m).register_forward_hook(partial(self._recorder.record, m)) for m in self._nested
            ]
            # the hooked modules are shared with the classifier: unhook them when this extractor goes away
            weakref.finalize(self, _remove_hooks, hooks)
        for path, module in steps[: order[-1] + 1]:
            self.add_module(path.replace(".", "_"), module)

    def forward_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the kept modules in order, collecting the selected taps' outputs."""
        # compiled out when scripted (__prepare_scriptable__ refuses hooked extractors); TorchScript drops
        # only a bare `if not is_scripting()` branch, hence the nested if
        if not is_scripting():  # noqa: SIM102
            if self._hooked:
                return self._forward_with_hooks(x)
        out: list[torch.Tensor] = []
        for key, module in self.items():
            x = module(x)
            if key in self._tap_keys:
                out.append(x)
        return out

    def _forward_with_hooks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """forward_taps where some taps sit inside a step: their forward hooks record them as it runs."""
        if isinstance(x, torch.fx.Proxy):
            raise FeatureNotAvailableError(_NESTED.format(taps=self._nested, how="traced with torch.fx"))
        outputs: dict[str, torch.Tensor] = {}
        with self._recorder.recording() as seen:
            for key, module in self.items():
                x = module(x)
                if key in self._tap_keys:
                    outputs[key] = x
        return [seen[m] if m in self._nested else outputs[m.replace(".", "_")] for m in self._tap_names]

    def __prepare_scriptable__(self) -> nn.Module:
        # torch.jit.script calls this first: hooks cannot be scripted, so refuse clearly where they are needed
        if self._nested:
            raise FeatureNotAvailableError(_NESTED.format(taps=self._nested, how="scripted with torch.jit.script"))
        return self


_NESTED = (
    "this extractor cannot be {how}: its tap(s) {taps} sit inside a block, not between the modules it runs in "
    "order, and are read by forward hooks; script or trace the classifier's forward_intermediates instead"
)


def _holding_step(path: str, steps: Sequence[tuple[str, nn.Module]]) -> int | None:
    """The position of the step holding the module at path, unless that step is an nn.Sequential.

    An nn.Sequential is opened into steps with flatten_sequential; without it, its taps stay refused.
    """
    for i, (step, module) in enumerate(steps):
        if path.startswith(step + "."):
            return None if isinstance(module, nn.Sequential) else i
    return None


class FeatureListNet(_TappedSequence, _ListOutput):
    """Re-sequenced top-level modules up to the last selected tap; returns a list of tensors."""


class FeatureDictNet(_TappedSequence):
    """Re-sequenced top-level modules up to the last selected tap; returns tensors keyed by tap module."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, t in zip(self._tap_names, self.forward_taps(x)):  # noqa: B905  # TorchScript has no strict=
            out[name] = t
        return out

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = nn.Module.__call__(self, x)
        return out


class _TapRecorder:
    """Receives tap outputs from forward hooks while its extractor's forward runs, per thread.

    The hooks sit on modules shared with the classifier (and with any other extractor of it), so
    outside its own extractor's forward a recorder ignores them.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def record(self, key: str, module: nn.Module, args: tuple[object, ...], output: torch.Tensor) -> None:
        """A forward hook (bound to a tap's key with functools.partial)."""
        seen: dict[str, torch.Tensor] | None = getattr(self._local, "seen", None)
        if seen is not None:
            seen[key] = output

    @contextmanager
    def recording(self) -> Iterator[dict[str, torch.Tensor]]:
        """Collect tap outputs (key -> tensor) for the duration of the block."""
        outer = getattr(self._local, "seen", None)
        seen: dict[str, torch.Tensor] = {}
        self._local.seen = seen
        try:
            yield seen
        finally:
            self._local.seen = outer

    # copy.deepcopy and pickle copy the hooks' partials with the recorder; a thread-local cannot travel
    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self._local = threading.local()


class FeatureHookNet(_ListOutput):
    """Forward hooks on the tap modules around the model's own forward_features; returns a list.

    It holds the model pruned after the last selected tap (where the model can prune), so later
    stages neither run nor hold parameters. Hooks cannot be scripted or traced.
    """

    def __init__(self, model: nn.Module, taps: FeatureTaps) -> None:
        super().__init__(taps)
        self.model = _backbone(model, taps.out_indices)
        # forward_features where the model has it (the head need not run), else the whole forward
        self._features_only = isinstance(self.model, FeatureForward)
        self._recorder = _TapRecorder()
        handles: list[RemovableHandle] = []
        for t in taps.taps():
            tap = _submodule(model, t.module)
            handles.append(tap.register_forward_hook(partial(self._recorder.record, t.module)))
        # the hooked modules are shared with the classifier: unhook them when this extractor goes away
        weakref.finalize(self, _remove_hooks, handles)

    def forward_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run forward_features (or forward) once and return what the tap hooks saw."""
        if isinstance(x, torch.fx.Proxy):
            raise FeatureNotAvailableError(_NOT_A_GRAPH.format(kind="hook", how="traced with torch.fx"))
        with self._recorder.recording() as seen:
            if self._features_only:  # checked once in __init__, not on every forward
                cast(FeatureForward, self.model).forward_features(x)
            else:
                self.model(x)
        names = self.feature_info.module_name()
        silent = [m for m in names if m not in seen]
        if silent:
            raise InvalidFeatureRequestError(f"{type(self.model).__name__}: tap module(s) {silent} did not run")
        return [seen[m] for m in names]

    def __prepare_scriptable__(self) -> nn.Module:
        # torch.jit.script calls this first: refuse clearly instead of failing deep inside the hook machinery
        raise FeatureNotAvailableError(_NOT_A_GRAPH.format(kind="hook", how="scripted with torch.jit.script"))


_NOT_A_GRAPH = (
    "a feature_cls={kind!r} extractor cannot be {how}: it collects tap outputs through forward hooks and "
    "Python code a graph does not hold; use feature_cls='list' or 'dict' (scripting and tracing) or 'getter' "
    "(tracing)"
)


class FeatureGetterNet(_ListOutput):
    """The model's own forward_intermediates, asked for the selected taps; returns a list.

    Like the hook extractor, it holds the model pruned after the last selected tap.
    """

    def __init__(self, model: nn.Module, taps: FeatureTaps) -> None:
        super().__init__(taps)
        if not isinstance(model, Intermediates):
            raise FeatureSurfaceError(
                f"feature_cls='getter' needs forward_intermediates, which {type(model).__name__} does not have "
                f"(zoo.domain.protocols.Intermediates); use one of "
                f"{', '.join(repr(c) for c in FEATURE_CLASSES if c != 'getter')}",
                missing=lacking(model, Intermediates),
            )
        self.model = _backbone(model, taps.out_indices)

    def forward_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """forward_intermediates for the selected taps (it stops after the last one)."""
        model = cast(Intermediates, self.model)  # checked in __init__ (not on every forward); the backbone keeps it
        return list(model.forward_intermediates(x, self.out_indices, stop_early=True, intermediates_only=True))

    def __prepare_scriptable__(self) -> nn.Module:
        # torch.jit.script calls this first: refuse clearly instead of failing deep inside forward_intermediates
        raise FeatureNotAvailableError(
            "a feature_cls='getter' extractor cannot be scripted with torch.jit.script: it calls the model's "
            "forward_intermediates, which is Python code; use feature_cls='list' or 'dict' to script"
        )


class FeatureFactory:
    """The standard FeatureWrapperFactory: validates the request and builds the chosen extractor."""

    def wrap(
        self,
        model: nn.Module,
        cfg: FeatureCfg,
        *,
        out_indices: Sequence[int] | None = None,
        feature_cls: str | None = None,
    ) -> FeatureExtractor:
        """An extractor for the taps out_indices selects (cfg's by default), by the feature_cls strategy.

        The extractor shares the model's modules (and so its weights); the model itself is not changed.
        """
        kind = cfg.feature_cls if feature_cls is None else feature_cls
        if kind not in FEATURE_CLASSES:
            raise InvalidFeatureRequestError(
                f"feature_cls={kind!r} is invalid: expected one of {', '.join(map(repr, FEATURE_CLASSES))}"
            )
        _check_served(model, kind)
        available = _feature_info(model)
        taps = FeatureTaps(available, take_indices(available, cfg.out_indices if out_indices is None else out_indices))
        if kind == "list":
            return FeatureListNet(model, taps, flatten_sequential=cfg.flatten_sequential)
        if kind == "dict":
            return FeatureDictNet(model, taps, flatten_sequential=cfg.flatten_sequential)
        if kind == "hook":
            return FeatureHookNet(model, taps)
        return FeatureGetterNet(model, taps)


def _check_served(model: nn.Module, kind: str) -> None:
    """Refuse a strategy the model declares its taps do not serve (its feature_classes; every one by default)."""
    served = model.feature_classes if isinstance(model, TapStrategies) else FEATURE_CLASSES
    if isinstance(served, tuple) and kind not in served:
        raise InvalidFeatureRequestError(
            f"feature_cls={kind!r} is not available for {type(model).__name__}: its tap modules' outputs are not its "
            f"feature maps (a token model's blocks give token sequences, which its forward_intermediates lays out "
            f"as maps); use feature_cls={' or '.join(map(repr, served))}"
        )


def _feature_info(model: nn.Module) -> tuple[FeatureInfo, ...]:
    if not isinstance(model, Tapped):
        raise FeatureSurfaceError(
            f"{type(model).__name__} has no feature_info (a non-empty list of FeatureInfo), so it has no taps "
            "for features_only (zoo.domain.protocols.Tapped)",
            missing=lacking(model, Tapped),
        )
    info: object = model.feature_info
    if not isinstance(info, (list, tuple)) or not info or not all(isinstance(t, FeatureInfo) for t in info):
        raise InvalidFeatureRequestError(
            f"{type(model).__name__} has no feature_info (a non-empty list of FeatureInfo), so it has no taps"
        )
    taps: tuple[FeatureInfo, ...] = tuple(info)
    for t in taps:
        _submodule(model, t.module)
    if [t.index for t in taps] != list(range(len(taps))):
        raise InvalidFeatureRequestError(
            f"{type(model).__name__}.feature_info indices {[t.index for t in taps]} are not 0..{len(taps) - 1}; "
            + describe_taps(taps)
        )
    return taps


def _submodule(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise InvalidFeatureRequestError(f"{type(model).__name__} has no module {path!r} for a feature tap") from None


def _resequence(module: nn.Module, prefix: str, taps: Sequence[str], flatten: bool) -> list[tuple[str, nn.Module]]:
    """(dotted path, module) in forward order: named_children, opening the nn.Sequentials that hold a tap."""
    steps: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        path = prefix + name
        if flatten and isinstance(child, nn.Sequential) and any(t.startswith(path + ".") for t in taps):
            steps.extend(_resequence(child, path + ".", taps, flatten))
        else:
            steps.append((path, child))
    return steps


def _backbone(model: nn.Module, out_indices: Sequence[int]) -> nn.Module:
    """A shallow copy sharing every kept submodule and weight, without the stages after the last tap, the head
    or the final norm.

    prune_intermediate_layers removes them where the model has it (so the copy holds only the
    parameters a forward uses, as DDP with find_unused_parameters=False requires), else
    reset_classifier(0) the classifier. The caller's model keeps everything; the extractor's
    state_dict has no classifier, as its cfg says.
    """
    if not isinstance(model, (LayerPruning, ClassifierHead)):
        return model
    clone = copy.copy(model)
    # copy.copy shares the child/parameter/buffer tables; the clone gets its own so the pruning stays its own
    for table in ("_modules", "_parameters", "_buffers"):
        object.__setattr__(clone, table, dict(getattr(model, table)))
    if isinstance(clone, LayerPruning):
        # the extractors never ask for the final norm (taps come unnormalised): it goes, as timm's getter drops it
        clone.prune_intermediate_layers(list(out_indices), prune_norm=True, prune_head=True)
    else:
        clone.reset_classifier(0)
    return clone


def _remove_hooks(handles: list[RemovableHandle]) -> None:
    for h in handles:
        h.remove()
