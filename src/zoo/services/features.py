"""Feature extraction: a classifier becomes a multi-scale backbone (list, dict, hook or getter strategy)."""

from __future__ import annotations

import abc
import copy
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Protocol, cast

import attrs
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from zoo.domain.errors import InvalidFeatureRequestError
from zoo.domain.features import describe_taps, take_indices
from zoo.domain.values import FEATURE_CLASSES, DefaultCfg, FeatureCfg, FeatureInfo

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

    def channels(self) -> list[int]:
        """Channels per selected tap."""
        return [t.num_chs for t in self.taps()]

    def reduction(self) -> list[int]:
        """Stride (input size / output size) per selected tap."""
        return [t.reduction for t in self.taps()]

    def module_name(self) -> list[str]:
        """Dotted module path (in the classifier model) per selected tap."""
        return [t.module for t in self.taps()]

    def __len__(self) -> int:
        return len(self.out_indices)

    def __iter__(self) -> Iterator[FeatureInfo]:
        return iter(self.taps())

    def __getitem__(self, i: int) -> FeatureInfo:
        return self.taps()[i]


class FeatureExtractor(nn.Module, abc.ABC):
    """A model's multi-scale features; `feature_info` and `out_indices` describe the selected taps."""

    # set by the Builder: the cfg describing the model as built (no classifier)
    default_cfg: DefaultCfg
    pretrained_cfg: DefaultCfg

    def __init__(self, taps: FeatureTaps) -> None:
        super().__init__()
        self.feature_info = taps
        self.out_indices = taps.out_indices

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


class _TappedSequence(FeatureExtractor):
    """The model's top-level modules, re-sequenced and cut after the last selected tap.

    A tap inside a module that is not an nn.Sequential (a residual block, say) cannot be a step
    boundary: a forward hook reads it while the step holding it runs.
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
        # ModuleDict-style keys cannot hold '.', so a flattened 'stages.0' is registered as 'stages_0' (as timm does)
        self._tap_keys = tuple(m.replace(".", "_") if m in position else None for m in selected)
        self._nested = tuple(m for m in selected if m not in position)
        self._recorder = _TapRecorder()
        handles = [_submodule(model, m).register_forward_hook(partial(self._recorder.record, m)) for m in self._nested]
        # the hooked modules are shared with the classifier: unhook them when this extractor goes away
        weakref.finalize(self, _remove_hooks, handles)
        for path, module in steps[: order[-1] + 1]:
            self.add_module(path.replace(".", "_"), module)

    def forward_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the kept modules in order, collecting the selected taps' outputs."""
        outputs: dict[str, torch.Tensor] = {}
        wanted = {k for k in self._tap_keys if k is not None}
        with self._recorder.recording() as seen:
            for key, module in self.named_children():
                x = module(x)
                if key in wanted:
                    outputs[key] = x
        return [
            seen[m] if k is None else outputs[k]
            for k, m in zip(self._tap_keys, self.feature_info.module_name(), strict=True)
        ]


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
        return dict(zip(self.feature_info.module_name(), self.forward_taps(x), strict=True))

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
    """Forward hooks on the tap modules around the model's own forward_features; returns a list."""

    def __init__(self, model: nn.Module, taps: FeatureTaps) -> None:
        super().__init__(taps)
        self.model = _without_head(model)
        self._recorder = _TapRecorder()
        handles: list[RemovableHandle] = []
        for t in taps.taps():
            tap = _submodule(model, t.module)
            handles.append(tap.register_forward_hook(partial(self._recorder.record, t.module)))
        # the hooked modules are shared with the classifier: unhook them when this extractor goes away
        weakref.finalize(self, _remove_hooks, handles)

    def forward_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run forward_features (or forward) once and return what the tap hooks saw."""
        run = getattr(self.model, "forward_features", None)
        with self._recorder.recording() as seen:
            if callable(run):
                run(x)
            else:
                self.model(x)
        names = self.feature_info.module_name()
        silent = [m for m in names if m not in seen]
        if silent:
            raise InvalidFeatureRequestError(f"{type(self.model).__name__}: tap module(s) {silent} did not run")
        return [seen[m] for m in names]


class _Classifier(Protocol):
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None: ...


class _Intermediates(Protocol):
    def forward_intermediates(
        self, x: torch.Tensor, indices: Sequence[int] | None = None
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]: ...


class FeatureGetterNet(_ListOutput):
    """The model's own forward_intermediates, asked for the selected taps; returns a list."""

    def __init__(self, model: nn.Module, taps: FeatureTaps) -> None:
        super().__init__(taps)
        if not callable(getattr(model, "forward_intermediates", None)):
            raise InvalidFeatureRequestError(
                f"feature_cls='getter' needs forward_intermediates, which {type(model).__name__} does not have; "
                f"use one of {', '.join(repr(c) for c in FEATURE_CLASSES if c != 'getter')}"
            )
        self.model = _without_head(model)

    def forward_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """forward_intermediates for the selected taps (it stops after the last one)."""
        out = cast(_Intermediates, self.model).forward_intermediates(x, indices=self.out_indices)
        # models on the full surface contract answer (final, taps) unless asked for taps only
        return list(out[1] if isinstance(out, tuple) else out)


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
        available = _feature_info(model)
        taps = FeatureTaps(available, take_indices(available, cfg.out_indices if out_indices is None else out_indices))
        if kind == "list":
            return FeatureListNet(model, taps, flatten_sequential=cfg.flatten_sequential)
        if kind == "dict":
            return FeatureDictNet(model, taps, flatten_sequential=cfg.flatten_sequential)
        if kind == "hook":
            return FeatureHookNet(model, taps)
        return FeatureGetterNet(model, taps)


def _feature_info(model: nn.Module) -> tuple[FeatureInfo, ...]:
    info: object = getattr(model, "feature_info", None)
    if not isinstance(info, (list, tuple)) or not info or not all(isinstance(t, FeatureInfo) for t in info):
        raise InvalidFeatureRequestError(
            f"{type(model).__name__} has no feature_info (a non-empty list of FeatureInfo), so it has no taps"
        )
    taps = tuple(cast(Sequence[FeatureInfo], info))
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


def _without_head(model: nn.Module) -> nn.Module:
    """A shallow copy sharing every submodule and weight, its classifier removed by reset_classifier(0).

    The caller's model keeps its classifier; the extractor's state_dict has none, as its cfg says.
    """
    if not callable(getattr(model, "reset_classifier", None)):
        return model
    clone = copy.copy(model)
    # copy.copy shares the child/parameter/buffer tables; the clone gets its own so the reset stays its own
    for table in ("_modules", "_parameters", "_buffers"):
        object.__setattr__(clone, table, dict(getattr(model, table)))
    cast(_Classifier, clone).reset_classifier(0)
    return clone


def _remove_hooks(handles: list[RemovableHandle]) -> None:
    for h in handles:
        h.remove()
