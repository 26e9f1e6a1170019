"""Feature extraction: a classifier becomes a multi-scale backbone (list, dict, hook or getter strategy)."""

from __future__ import annotations

import abc
import copy
import operator
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, cast, get_type_hints

import torch
import torch.fx
from torch import nn
from torch._jit_internal import is_scripting
from torch.utils.hooks import RemovableHandle

from zoo.domain.errors import (
    FeatureNotAvailableError,
    FeatureSurfaceError,
    InvalidFeatureRequestError,
)
from zoo.domain.features import FeatureTaps, describe_taps, take_indices
from zoo.domain.protocols import (
    ClassifierHead,
    FeatureForward,
    Intermediates,
    LayerPruning,
    Tapped,
    TapStrategies,
    lacking,
)
from zoo.domain.values import FEATURE_CLASSES, DefaultCfg, FeatureCfg, FeatureInfo
from zoo.services.feature_keys import rename_other_spellings

__all__ = [
    "FeatureDictNet",
    "FeatureExtractor",
    "FeatureFactory",
    "FeatureGetterNet",
    "FeatureHookNet",
    "FeatureHookSequenceNet",
    "FeatureListNet",
    "FeatureTaps",
]


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
        # each child's path in the classifier ('' for the classifier itself), by the child's path here: how
        # load_state_dict recognises a key spelled the classifier's way or an earlier extractor's
        self._classifier_paths: dict[str, str] = {}
        self.register_load_state_dict_pre_hook(rename_other_spellings)  # type: ignore[no-untyped-call]  # torch leaves it unannotated

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

    def __init__(
        self, model: nn.Module, taps: FeatureTaps, *, flatten_sequential: bool, hook_every_tap: bool = False
    ) -> None:
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
                "containers, or inside other modules; feature_cls='hook' without flatten_sequential serves any tap"
            )
        order = [i for i in where.values() if i is not None]  # every one, as none is missing
        if order != sorted(order):
            raise InvalidFeatureRequestError(
                f"{type(model).__name__}: feature_info order {selected} disagrees with the module order"
            )
        self._tap_names = list(selected)
        self._nested = list(selected) if hook_every_tap else [m for m in selected if m not in position]
        self._hooked = len(self._nested) > 0  # a bool, as TorchScript reads it (an empty list has no type)
        self._recorder = _TapRecorder()
        if self._hooked:
            hooks = [
                _submodule(model, m).register_forward_hook(partial(self._recorder.record, m)) for m in self._nested
            ]
            # the hooked modules are shared with the classifier: unhook them when this extractor goes away
            weakref.finalize(self, _remove_hooks, hooks)
        # each step's key as _run names its output: with flatten_sequential its ModuleDict key ('.' joined as '_':
        # 'stages.0' is 'stages_0', as the reference's flattening names it); without, an opened container keeps its
        # name and holds its children ('blocks.0' is child '0' of 'blocks'), and a child's key is the container's
        # and the child's position ('blocks.0'); plain lists and dicts of str, as TorchScript reads them
        self._run_keys: dict[str, str] = {}
        for path, module in steps[: order[-1] + 1]:
            if flatten_sequential or "." not in path:
                self._run_keys[path] = path.replace(".", "_")
                self.add_module(self._run_keys[path], module)
                self._classifier_paths[self._run_keys[path]] = path
                continue
            parent, child = path.split(".", 1)
            if parent not in self:
                self.add_module(parent, _OpenedSequential())
            opened = self[parent]
            self._run_keys[path] = f"{parent}.{len(list(opened.children()))}"
            opened.add_module(child, module)
            self._classifier_paths[path] = path
        self._tap_keys = [] if hook_every_tap else [self._run_keys[m] for m in selected if m in position]

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the kept modules in order; the outputs of the steps that are taps, by step key."""
        outputs: dict[str, torch.Tensor] = {}
        for key, module in self.items():
            # an opened container runs its children one by one (hasattr on a module is resolved when scripted;
            # TorchScript cannot resolve the class for isinstance here)
            if hasattr(module, "opened_by_extractor"):
                for i, step in enumerate(module.children()):
                    x = step(x)
                    if key + "." + str(i) in self._tap_keys:
                        outputs[key + "." + str(i)] = x
            else:
                x = module(x)
                if key in self._tap_keys:
                    outputs[key] = x
        return outputs

    def forward_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the kept modules in order, collecting the selected taps' outputs."""
        # compiled out when scripted (__prepare_scriptable__ refuses hooked extractors); TorchScript drops
        # only a bare `if not is_scripting()` branch, hence the nested if
        if not is_scripting():  # noqa: SIM102
            if self._hooked:
                return self._forward_with_hooks(x)
        outputs = self._run(x)
        return [outputs[k] for k in self._tap_keys]

    def _forward_with_hooks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """forward_taps where some taps sit inside a step: their forward hooks record them as it runs."""
        if isinstance(x, torch.fx.Proxy):
            raise FeatureNotAvailableError(_NESTED.format(taps=self._nested, how="traced with torch.fx"))
        with self._recorder.recording() as seen:
            outputs = self._run(x)
        return [seen[m] if m in self._nested else outputs[self._run_keys[m]] for m in self._tap_names]

    def __prepare_scriptable__(self) -> nn.Module:
        # torch.jit.script calls this first: hooks cannot be scripted, so refuse clearly where they are needed
        if self._nested:
            raise FeatureNotAvailableError(_NESTED.format(taps=self._nested, how="scripted with torch.jit.script"))
        return self


_NESTED = (
    "this extractor cannot be {how}: its tap(s) {taps} sit inside a block, not between the modules it runs in "
    "order, and are read by forward hooks; script or trace the classifier's forward_intermediates instead"
)


class _OpenedSequential(nn.Sequential):
    """An nn.Sequential's kept children under the Sequential's own names, run one by one by the extractor.

    What flatten_sequential=False makes of a top-level nn.Sequential holding taps: its children are steps,
    and their state_dict keys stay the classifier's ('blocks.0.0.conv.weight').
    """

    def __init__(self) -> None:
        super().__init__()
        # what the extractor's forward tells it by (an instance attribute: the one kind a script sees)
        self.opened_by_extractor = True


def _holding_step(path: str, steps: Sequence[tuple[str, nn.Module]]) -> int | None:
    """The position of the step holding the module at path, unless that step is an nn.Sequential.

    _resequence opens the nn.Sequentials holding taps that it can; the taps of any other stay refused.
    """
    for i, (step, module) in enumerate(steps):
        if path.startswith(step + "."):
            return None if isinstance(module, nn.Sequential) else i
    return None


class FeatureListNet(_TappedSequence, _ListOutput):
    """Re-sequenced top-level modules up to the last selected tap; returns a list of tensors."""


class FeatureDictNet(_TappedSequence):
    """Re-sequenced top-level modules up to the last selected tap; returns tensors keyed by tap index.

    A tap's key is its index as a string ('1', '3' for out_indices (1, 3)), as the reference names them,
    or the name out_map gives it.
    """

    def __init__(
        self,
        model: nn.Module,
        taps: FeatureTaps,
        *,
        flatten_sequential: bool,
        out_map: Sequence[str] | None = None,
    ) -> None:
        super().__init__(model, taps, flatten_sequential=flatten_sequential)
        # a plain list of str, as TorchScript reads it
        self._out_names = [str(i) for i in taps.out_indices] if out_map is None else list(out_map)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, t in zip(self._out_names, self.forward_taps(x)):  # noqa: B905  # TorchScript has no strict=
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


class FeatureHookSequenceNet(_TappedSequence, _ListOutput):
    """feature_cls='hook' with flatten_sequential: the re-sequenced top-level modules, every tap read by a hook.

    Its state_dict keys are the flattened ones ('stem_0', 'blocks_0'), as the reference's hook extractor
    names them for such a model. Hooks cannot be scripted or traced.
    """

    def __init__(self, model: nn.Module, taps: FeatureTaps) -> None:
        super().__init__(model, taps, flatten_sequential=True, hook_every_tap=True)

    def __prepare_scriptable__(self) -> nn.Module:
        raise FeatureNotAvailableError(_NOT_A_GRAPH.format(kind="hook", how="scripted with torch.jit.script"))


class FeatureHookNet(_ListOutput):
    """Forward hooks on the tap modules around the model's own forward_features; returns a list.

    It holds the model pruned after the last selected tap (where the model can prune), so later
    stages neither run nor hold parameters. Hooks cannot be scripted or traced.
    """

    def __init__(self, model: nn.Module, taps: FeatureTaps) -> None:
        super().__init__(taps)
        self.model = _backbone(model, taps.out_indices)
        self._classifier_paths["model"] = ""
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
        self._classifier_paths["model"] = ""

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
        out_map: Sequence[str] | None = None,
    ) -> FeatureExtractor:
        """An extractor for the taps out_indices selects (cfg's by default), by the feature_cls strategy.

        out_map names a 'dict' extractor's outputs, one name per out_indices entry (in the order given);
        by default they are the tap indices as strings. The extractor shares the model's modules (and so
        its weights); the model itself is not changed.
        """
        kind = cfg.feature_cls if feature_cls is None else feature_cls
        if kind not in FEATURE_CLASSES:
            raise InvalidFeatureRequestError(
                f"feature_cls={kind!r} is invalid: expected one of {', '.join(map(repr, FEATURE_CLASSES))}"
            )
        _check_served(model, kind)
        available = _feature_info(model)
        wanted = cfg.out_indices if out_indices is None else out_indices
        taps = FeatureTaps(available, take_indices(available, wanted))
        names = None if out_map is None else _out_names(out_map, kind, wanted, taps)
        if kind == "list":
            return FeatureListNet(model, taps, flatten_sequential=cfg.flatten_sequential)
        if kind == "dict":
            return FeatureDictNet(model, taps, flatten_sequential=cfg.flatten_sequential, out_map=names)
        if kind == "hook":
            # as the reference: with flatten_sequential, the re-sequenced modules, hooked; else the whole model
            return FeatureHookSequenceNet(model, taps) if cfg.flatten_sequential else FeatureHookNet(model, taps)
        return FeatureGetterNet(model, taps)


def _out_names(out_map: object, kind: str, wanted: Sequence[int] | None, taps: FeatureTaps) -> list[str]:
    """out_map's names in network order: out_map[i] names the tap out_indices[i] selects (every tap by default)."""
    valid = f"a sequence of {len(taps)} unique non-empty strings, one per selected tap ({list(taps.out_indices)})"
    if kind != "dict":
        raise InvalidFeatureRequestError(
            f"out_map={out_map!r} names the outputs of feature_cls='dict' only, not of feature_cls={kind!r} "
            "(which returns a list); pass feature_cls='dict' or leave out_map out"
        )
    if isinstance(out_map, (str, bytes)) or not isinstance(out_map, Sequence):
        raise InvalidFeatureRequestError(f"out_map={out_map!r} is invalid: expected {valid}")
    names: list[object] = list(out_map)
    bad = [n for n in names if not isinstance(n, str) or not n]
    dupes = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if len(names) != len(taps) or bad or dupes:
        reason = (
            f"{len(names)} names"
            if len(names) != len(taps)
            else f"{bad} not non-empty strings"
            if bad
            else f"{dupes} repeated"
        )
        raise InvalidFeatureRequestError(f"out_map={out_map!r} is invalid ({reason}): expected {valid}")
    n = len(taps.available)
    order = range(n) if wanted is None else [operator.index(i) % n for i in wanted]
    by_index = dict(zip(order, cast(list[str], names), strict=True))
    return [by_index[i] for i in taps.out_indices]


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
    """(dotted path, module) in forward order: named_children, opening nn.Sequentials into their children.

    With flatten, every top-level nn.Sequential is opened (as the reference flattens them), and below it
    those holding a tap; without, a top-level nn.Sequential holding a tap is opened one level. A Sequential
    that is a tap itself stays whole.
    """
    steps: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        path = prefix + name
        holds_tap = any(t.startswith(path + ".") for t in taps)
        # a Sequential that is itself a tap stays one step, its output being the tap's
        opens = isinstance(child, nn.Sequential) and path not in taps
        if opens and (holds_tap or (flatten and not prefix)) and (flatten or not prefix):
            steps.extend(_resequence(child, path + ".", taps, flatten) if flatten else _children(child, path))
        else:
            steps.append((path, child))
    return steps


def _children(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    return [(f"{path}.{name}", child) for name, child in module.named_children()]


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
