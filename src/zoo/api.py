"""The composition root (ModelZoo) and the module-level facade over a lazily built default zoo."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

from zoo.domain.cfg_request import requested_cfg, tagged_name
from zoo.domain.errors import InvalidArgumentError, InvalidValueError
from zoo.domain.protocols import FeatureWrapperFactory, Pruner, WeightApplier, WeightLoader
from zoo.domain.values import BuildRequest, DefaultCfg, ModelSpec, check_path

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn
    from torch.distributed import ProcessGroup

    from zoo.archs.base import ZooModule
    from zoo.domain.cards import ModelCard, SortKey
    from zoo.domain.prune import PruneSpec
    from zoo.inference import OptimizedModel
    from zoo.services.builder import Builder
    from zoo.services.features import FeatureExtractor
    from zoo.services.registry import Registry
    from zoo.services.saved import SavedModel

__all__ = [
    "ModelZoo",
    "builtin_registry",
    "convert_sync_batchnorm",
    "create_model",
    "default_zoo",
    "fuse_for_inference",
    "get_default_cfg",
    "get_pretrained_cfg",
    "get_pretrained_cfg_value",
    "is_model",
    "list_models",
    "list_modules",
    "list_pretrained",
    "model_card",
    "optimize_for_inference",
    "save_pretrained",
    "search_models",
]


def builtin_registry() -> Registry:
    """A new Registry holding the built-in catalogue; families load on first use of one of their names."""
    from zoo.archs.catalogue import FAMILIES, load_family
    from zoo.services.registry import Registry

    registry = Registry()
    for module, names in FAMILIES.items():
        registry.register_lazy(module, names, functools.partial(load_family, module))
    return registry


_M = TypeVar("_M", bound="nn.Module")
_F = TypeVar("_F", bound=Callable[..., object])


def _eager_under_dynamo(build: _F) -> _F:
    """build, run by Python itself when torch.compile traces its caller (`torch.compile(lambda: create_model(..))`).

    Building a model makes no graph: dynamo would follow the registry, attrs values and the one-pass init to
    no use, and fails on some of it. Marked lazily: torch._dynamo is seconds to import, and until something
    has imported it (torch.compile, torch.export) nothing can trace the call.
    """
    disabled: list[Callable[..., object]] = []

    @functools.wraps(build)
    def run(*args: Any, **kwargs: Any) -> object:
        if "torch._dynamo" not in sys.modules:
            return build(*args, **kwargs)
        if not disabled:
            import torch

            # called, not checked with is_compiling(): dynamo may run this frame itself and trace what it calls
            disable = cast(Callable[..., Callable[..., object]], torch.compiler.disable)
            disabled.append(disable(build, recursive=True))
        return disabled[0](*args, **kwargs)

    return cast(_F, run)


def convert_sync_batchnorm(model: _M, process_group: ProcessGroup | None = None) -> _M:
    """Make every batch norm in model (fused norm + activation modules included) synchronised across ranks.

    In place, returning model; see zoo.archs.layers.sync_norm.convert_sync_batchnorm.
    """
    from zoo.archs.layers.sync_norm import convert_sync_batchnorm as convert

    return convert(model, process_group)


def fuse_for_inference(model: _M, *, strict: bool = False) -> _M:
    """An eval-mode copy of model (same class) with batch norms folded into their convolutions.

    Its machinery (torch.fx, zoo's layers) is imported on the first call; see zoo.archs.fuse.fuse_for_inference.
    """
    from zoo.archs.fuse import fuse_for_inference as fuse

    return fuse(model, strict=strict)


def optimize_for_inference(
    model: nn.Module,
    *,
    dtype: str = "auto",
    memory_format: str = "auto",
    compile: bool = False,
    example: torch.Tensor | None = None,
    check: bool = True,
) -> OptimizedModel:
    """An eval copy of model for inference: norms folded, layers fused with their activations (CPU), the device's
    fastest memory format and lowest native precision, optionally compiled, its accuracy checked against
    float32 eager; model is untouched.

    Imported on the first call; see zoo.inference.optimize_for_inference.
    """
    from zoo.inference import optimize_for_inference as optimize

    return optimize(model, dtype=dtype, memory_format=memory_format, compile=compile, example=example, check=check)


class ModelZoo:
    """Registry + Builder + services, wired together; every part left out is the standard one."""

    def __init__(
        self,
        *,
        registry: Registry | None = None,
        weight_loader: WeightLoader | None = None,
        weight_applier: WeightApplier | None = None,
        pruner: Pruner | None = None,
        feature_factory: FeatureWrapperFactory | None = None,
    ) -> None:
        self.registry = registry if registry is not None else builtin_registry()
        self._weight_loader = weight_loader
        self._weight_applier = weight_applier
        self._pruner = pruner
        self._feature_factory = feature_factory

    @functools.cached_property
    def builder(self) -> Builder:
        """The Builder over the given services, standard ones for those left out.

        Built on first use, so that listing names imports no weights or features machinery.
        """
        from zoo.services.builder import Builder
        from zoo.services.features import FeatureFactory
        from zoo.services.pruner import ChannelPruner
        from zoo.services.weights import CachedWeightLoader, apply_weights

        return Builder(
            weight_loader=self._weight_loader if self._weight_loader is not None else CachedWeightLoader(),
            weight_applier=self._weight_applier if self._weight_applier is not None else apply_weights,
            pruner=self._pruner if self._pruner is not None else ChannelPruner(),
            feature_factory=self._feature_factory if self._feature_factory is not None else FeatureFactory(),
        )

    @overload
    def create_model(
        self,
        name: str,
        *,
        pretrained: bool = False,
        num_classes: int | None = None,
        in_chans: int | None = None,
        features_only: Literal[False] = False,
        out_indices: Sequence[int] | None = None,
        feature_cls: str | None = None,
        out_map: Sequence[str] | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        pretrained_cfg: DefaultCfg | Mapping[str, object] | str | None = None,
        pretrained_cfg_overlay: Mapping[str, object] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        prune_spec: str | os.PathLike[str] | PruneSpec | None = None,
        scriptable: bool | None = None,
        exportable: bool | None = None,
        no_jit: bool | None = None,
        **model_args: Any,
    ) -> ZooModule: ...

    @overload
    def create_model(
        self,
        name: str,
        *,
        pretrained: bool = False,
        num_classes: int | None = None,
        in_chans: int | None = None,
        features_only: Literal[True],
        out_indices: Sequence[int] | None = None,
        feature_cls: str | None = None,
        out_map: Sequence[str] | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        pretrained_cfg: DefaultCfg | Mapping[str, object] | str | None = None,
        pretrained_cfg_overlay: Mapping[str, object] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        prune_spec: str | os.PathLike[str] | PruneSpec | None = None,
        scriptable: bool | None = None,
        exportable: bool | None = None,
        no_jit: bool | None = None,
        **model_args: Any,
    ) -> FeatureExtractor: ...

    @overload
    def create_model(
        self,
        name: str,
        *,
        pretrained: bool = False,
        num_classes: int | None = None,
        in_chans: int | None = None,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        feature_cls: str | None = None,
        out_map: Sequence[str] | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        pretrained_cfg: DefaultCfg | Mapping[str, object] | str | None = None,
        pretrained_cfg_overlay: Mapping[str, object] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        prune_spec: str | os.PathLike[str] | PruneSpec | None = None,
        scriptable: bool | None = None,
        exportable: bool | None = None,
        no_jit: bool | None = None,
        **model_args: Any,
    ) -> ZooModule | FeatureExtractor: ...

    @_eager_under_dynamo
    def create_model(
        self,
        name: str,
        *,
        pretrained: bool = False,
        num_classes: int | None = None,
        in_chans: int | None = None,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        feature_cls: str | None = None,
        out_map: Sequence[str] | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        pretrained_cfg: DefaultCfg | Mapping[str, object] | str | None = None,
        pretrained_cfg_overlay: Mapping[str, object] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        prune_spec: str | os.PathLike[str] | PruneSpec | None = None,
        scriptable: bool | None = None,
        exportable: bool | None = None,
        no_jit: bool | None = None,
        **model_args: Any,
    ) -> ZooModule | FeatureExtractor:
        """Create a registered model by name (or name.tag); features_only=True gives a FeatureExtractor.

        prune_spec (a PruneSpec, a spec file path or the spec text) builds the model at that channel layout.
        A saved model is named `local-dir:PATH` or `hf-hub:org/name[@revision]` (config.json + weights, as
        save_pretrained or timm write them); as in timm, pretrained=True loads its weights.

        As in timm: pretrained_cfg replaces the name's cfg (a DefaultCfg; a mapping of its fields, the rest
        defaults, timm's dict cfgs read as zoo.domain.cfg_request says; a str is a tag), then
        pretrained_cfg_overlay changes fields of it; checkpoint_path='' means none; cache_dir is where this
        call's downloaded weights (hub files too) go instead of the loader's cache. scriptable, exportable
        and no_jit are checked to be bools (or None) and change nothing: every zoo model scripts, traces
        and exports as built.
        """
        cache = check_path("cache_dir", cache_dir, "a directory path")
        if isinstance(pretrained_cfg, str):
            name, pretrained_cfg = _tagged(name, pretrained_cfg), None
        saved = self._read_saved(name, cache)
        if saved is None:
            spec, cfg = self.registry.resolve(name)
        else:
            from zoo.services.saved import saved_model_args, saved_spec

            spec, cfg = saved_spec(saved, self.registry.get_spec), saved.cfg
            model_args = {**saved_model_args(saved, spec), **model_args}
            prune_spec = saved.prune_spec if prune_spec is None else prune_spec  # a caller's layout replaces it
        request = BuildRequest(
            cfg=requested_cfg(name, cfg, pretrained_cfg, pretrained_cfg_overlay),
            pretrained=pretrained,
            num_classes=num_classes,
            in_chans=in_chans,
            features_only=features_only,
            out_indices=out_indices,  # validated against the model's taps by the feature factory
            feature_cls=feature_cls,
            out_map=out_map,  # validated against the taps by the feature factory
            checkpoint_path=checkpoint_path,
            cache_dir=cache,
            scriptable=scriptable,
            exportable=exportable,
            no_jit=no_jit,
            model_args=model_args,
            prune_spec=_read_if_spec_file(prune_spec),
            label_names=() if saved is None else saved.label_names,
        )
        model = self.builder.build(spec, request).model
        return _as_extractor(model, spec) if request.features_only else _as_zoo_module(model, spec)

    def _read_saved(self, name: str, cache_dir: str | None = None) -> SavedModel | None:
        """The saved model a local-dir:/hf-hub: name points at (hub files through this zoo's loader, fetching
        into cache_dir when given), else None."""
        from zoo.services.builder import loader_for
        from zoo.services.saved import is_saved_name, open_saved

        if not is_saved_name(name):
            return None
        loader = self._weight_loader if self._weight_loader is not None else self.builder.weight_loader
        return open_saved(name, loader if loader is None else loader_for(loader, cache_dir))

    def save_pretrained(
        self,
        model: nn.Module,
        directory: str | os.PathLike[str],
        *,
        label_names: Iterable[str] | None = None,
        architecture: str | None = None,
    ) -> Path:
        """Write model.safetensors and config.json into directory; see zoo.api.save_pretrained.

        Nothing is written unless this zoo builds config.json back to the model's exact layout.
        """
        from zoo.services.saved import save_pretrained as save

        return save(model, directory, label_names=label_names, architecture=architecture, rebuild=self._rebuild_saved)

    def _rebuild_saved(self, saved: SavedModel, tensors: Mapping[str, torch.Tensor]) -> nn.Module:
        """What this zoo builds from config.json and tensors, on the meta device; see services.saved.rebuild_layout."""
        from zoo.services.saved import rebuild_layout

        return rebuild_layout(saved, tensors, get_spec=self.registry.get_spec, pruner=self.builder.pruner)

    def get_spec(self, name: str) -> ModelSpec:
        """The spec of a registered name."""
        return self.registry.get_spec(name)

    def get_default_cfg(self, name: str) -> DefaultCfg:
        """The DefaultCfg of name or name.tag (or of a local-dir:/hf-hub: saved model)."""
        saved = self._read_saved(name)
        return saved.cfg if saved is not None else self.registry.resolve(name)[1]

    def get_pretrained_cfg(self, name: str) -> DefaultCfg:
        """get_default_cfg under timm's name: unknown names and tags raise UnknownModelError (timm may return None)."""
        return self.get_default_cfg(name)

    def get_pretrained_cfg_value(self, name: str, key: str) -> object:
        """One field of the DefaultCfg of name or name.tag; None for a key the cfg has no field for (as timm)."""
        if not isinstance(key, str):
            raise InvalidValueError(f"key={key!r} is invalid: expected a str naming a DefaultCfg field")
        return self.get_default_cfg(name).get(key)

    def list_models(
        self,
        filter: str | Sequence[str] = "",
        *,
        exclude_filters: str | Sequence[str] = (),
        module: str | Sequence[str] | None = None,
        pretrained: bool = False,
        include_tags: bool | None = None,
    ) -> list[str]:
        """Registered names matching fnmatch patterns, naturally sorted; tags by default only with pretrained=True."""
        return self.registry.list_models(
            filter, exclude_filters=exclude_filters, module=module, pretrained=pretrained, include_tags=include_tags
        )


def _as_zoo_module(model: object, spec: ModelSpec) -> ZooModule:
    """The built classifier. zoo's own architectures build ZooModules; a custom registry's constructor may return
    any nn.Module, handed back as built: what needs more of it checks zoo.domain.protocols where it does."""
    import torch.nn

    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(
            f"model {spec.name!r} was built as {type(model).__qualname__}, which is not a torch.nn.Module; "
            "a registered constructor must return an nn.Module"
        )
    # the declared type describes zoo's catalogue; a plain module of a custom registry has the surface it has
    return cast("ZooModule", model)


def _as_extractor(model: object, spec: ModelSpec) -> FeatureExtractor:
    from zoo.services.features import FeatureExtractor

    if not isinstance(model, FeatureExtractor):
        raise InvalidArgumentError(
            f"{spec.name!r} with features_only=True was wrapped as {type(model).__qualname__}, which is not a "
            "zoo.services.features.FeatureExtractor; a FeatureWrapperFactory must return a FeatureExtractor subclass"
        )
    return model


_default_lock = threading.Lock()
_default: ModelZoo | None = None


def default_zoo() -> ModelZoo:
    """The process-wide ModelZoo the module-level functions use, built on first call."""
    global _default
    with _default_lock:
        if _default is None:
            _default = _make_default_zoo()
        return _default


def _make_default_zoo() -> ModelZoo:
    return ModelZoo()


def _on_default_zoo(method: Callable[[ModelZoo], _F]) -> _F:
    """method(zoo) as a module function on the default zoo, typed as method(zoo) is: overloads and all.

    The default zoo is looked up on every call, not bound here: it is built on first use (and a test may
    swap it). Named, documented and with the signature of the ModelZoo method, less self, for help().
    """
    function = method(cast(ModelZoo, ModelZoo))  # on the class itself, method gives the plain function

    @functools.wraps(function)
    def on_default(*args: Any, **kwargs: Any) -> object:
        bound: Callable[..., object] = method(default_zoo())
        return bound(*args, **kwargs)

    on_default.__qualname__ = on_default.__name__
    signature = inspect.signature(function)
    on_default.__signature__ = signature.replace(  # type: ignore[attr-defined]  # read by inspect.signature
        parameters=list(signature.parameters.values())[1:]
    )
    return cast(_F, on_default)


# the signature is ModelZoo.create_model's, written once; dynamo runs this as plain Python too (see ModelZoo's)
create_model = _eager_under_dynamo(_on_default_zoo(lambda zoo: zoo.create_model))


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    label_names: Iterable[str] | None = None,
    architecture: str | None = None,
) -> Path:
    """Write model.safetensors and config.json (the hub's model-card layout timm reads) into directory.

    `create_model("local-dir:DIR", pretrained=True)` (or `"hf-hub:org/name"` once uploaded) builds it back;
    a model changed after create_model in a way config.json cannot describe raises SavedModelError instead.
    """
    return default_zoo().save_pretrained(model, directory, label_names=label_names, architecture=architecture)


def list_models(
    filter: str | Sequence[str] = "",
    *,
    exclude_filters: str | Sequence[str] = (),
    module: str | Sequence[str] | None = None,
    pretrained: bool = False,
    include_tags: bool | None = None,
) -> list[str]:
    """Registered names matching fnmatch patterns, naturally sorted (resnet18 before resnet101).

    include_tags=None lists name.tag entries when pretrained=True, bare names otherwise.
    """
    return default_zoo().list_models(
        filter, exclude_filters=exclude_filters, module=module, pretrained=pretrained, include_tags=include_tags
    )


def model_card(name: str, *, img_size: int | None = None) -> ModelCard:
    """The published ImageNet-1k accuracy and cost of NAME or NAME.TAG (see zoo.cards.model_card)."""
    from zoo.cards import model_card as card

    return card(name, img_size=img_size)


def search_models(
    filter: str | list[str] | tuple[str, ...] = "",
    *,
    exclude_filters: str | list[str] | tuple[str, ...] = (),
    sort: SortKey | None = None,
    max_params: float | None = None,
    min_top1: float | None = None,
    max_gmacs: float | None = None,
    img_size: int | None = None,
) -> list[ModelCard]:
    """list_models' companion: the cards of the NAME.TAGs that pass published-figure bounds, sorted.

    E.g. the most accurate model under 10M parameters: search_models(sort="top1", max_params=10)[0].
    See zoo.cards.search_models for the units and what is left out.
    """
    from zoo.cards import search_models as search

    return search(
        filter,
        exclude_filters=exclude_filters,
        sort=sort,
        max_params=max_params,
        min_top1=min_top1,
        max_gmacs=max_gmacs,
        img_size=img_size,
    )


def is_model(name: str) -> bool:
    """Whether name (or name.tag) is registered."""
    return default_zoo().registry.is_model(name)


def list_modules() -> list[str]:
    """Architecture families with registered models."""
    return default_zoo().registry.list_modules()


def list_pretrained(filter: str | Sequence[str] = "", exclude_filters: str | Sequence[str] = ()) -> list[str]:
    """Every name.tag with published weights."""
    return default_zoo().registry.list_pretrained(filter, exclude_filters)


def get_default_cfg(name: str) -> DefaultCfg:
    """The DefaultCfg of name or name.tag."""
    return default_zoo().get_default_cfg(name)


def get_pretrained_cfg(name: str) -> DefaultCfg:
    """The DefaultCfg of name or name.tag (bare name: its default tag's), as timm's get_pretrained_cfg names it.

    An unknown name or tag raises UnknownModelError naming close names (every tag of a known name).
    """
    return default_zoo().get_pretrained_cfg(name)


def get_pretrained_cfg_value(name: str, key: str) -> object:
    """One field of the DefaultCfg of name or name.tag (None for a key that is not a field, as in timm)."""
    return default_zoo().get_pretrained_cfg_value(name, key)


def _read_if_spec_file(value: object) -> object:
    """create_model's prune_spec with a spec file's path replaced by the file's text (BuildRequest parses it).

    A path is an os.PathLike or a str that is not spec text (spec text has a `:[`).
    """
    if isinstance(value, os.PathLike) or (isinstance(value, str) and ":[" not in value):
        from zoo.domain.errors import PruneSpecError

        try:
            with open(os.fspath(value), encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError, TypeError, ValueError) as e:
            raise PruneSpecError(f"prune_spec={value!r} is invalid: cannot read it as a spec file ({e})") from e
    return value


def _tagged(name: str, tag: str) -> str:
    """name with the tag a str pretrained_cfg names (timm's form); a saved model has no tags, so it is refused."""
    from zoo.services.saved import is_saved_name

    if is_saved_name(name):
        raise InvalidArgumentError(
            f"pretrained_cfg={tag!r} names a tag, and {name!r} is a saved model, which has one cfg (its config.json)"
        )
    return tagged_name(name, tag)
