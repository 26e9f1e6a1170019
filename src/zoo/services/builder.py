"""Builder: spec + request -> a ready nn.Module and its BuildRecord, in a fixed order of service calls."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import attrs
import torch
from torch import nn

from zoo.domain.errors import FeatureNotAvailableError, InvalidArgumentError, InvalidValueError, ModelSurfaceError
from zoo.domain.protocols import (
    BuiltForImageSize,
    ClassifierHead,
    FeatureWrapperFactory,
    InitialisesOnce,
    Pruner,
    RelocatableCache,
    WeightApplier,
    WeightLoader,
    lacking,
)
from zoo.domain.values import BuildRecord, BuildRequest, DefaultCfg, ModelSpec
from zoo.services.parallel_init import parallel_random_fills

if TYPE_CHECKING:
    from zoo.domain.prune import PruneSpec
    from zoo.services.weights.meta import KeptStorage

# Arguments the Builder itself fills in for every constructor that takes them.
_BUILDER_ARGS = ("num_classes", "in_chans")


def constructor_params(spec: ModelSpec) -> tuple[str, ...] | None:
    """Keyword names a spec's constructor accepts, or None when it takes **kwargs."""
    own = spec.constructor
    if isinstance(own, type) and issubclass(own, nn.Module) and own.__init__ is nn.Module.__init__:
        return ()  # a module class without an __init__ of its own: nn.Module's *args, **kwargs take nothing
    params = inspect.signature(spec.constructor).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def adapt_cfg(
    cfg: DefaultCfg,
    *,
    num_classes: int,
    in_chans: int,
    features_only: bool,
    image_size: tuple[int, int] | None = None,
) -> DefaultCfg:
    """The cfg describing the model as built: its classes, its input channels and size, its head.

    image_size: the (height, width) the model was built for, when its constructor took one (ViT's
    img_size); the cfg's input_size follows it, and a test_input_size chosen for the other size goes.
    """
    changes: dict[str, object] = {}
    if image_size is not None and tuple(image_size) != tuple(cfg.input_size[1:]):
        cfg = cfg.evolve({"input_size": (cfg.input_size[0], *image_size), "test_input_size": None})
    if num_classes != cfg.num_classes:
        changes["num_classes"] = num_classes
    if in_chans != cfg.input_size[0]:
        # mirror the first-conv adaptation: one channel sees the RGB mean, more repeat RGB cyclically
        mean: tuple[float, ...]
        std: tuple[float, ...]
        if in_chans == 1:
            mean, std = (sum(cfg.mean) / len(cfg.mean),), (sum(cfg.std) / len(cfg.std),)
        else:
            mean = tuple(cfg.mean[i % len(cfg.mean)] for i in range(in_chans))
            std = tuple(cfg.std[i % len(cfg.std)] for i in range(in_chans))
        changes.update(
            input_size=(in_chans, *cfg.input_size[1:]),
            test_input_size=None if cfg.test_input_size is None else (in_chans, *cfg.test_input_size[1:]),
            mean=mean,
            std=std,
        )
    if features_only:
        changes.update(num_classes=0, classifier="")
    return cfg.evolve(changes) if changes else cfg


def checkpoint_classes(state_dict: Mapping[str, torch.Tensor], cfg: DefaultCfg) -> int | None:
    """The class count of the checkpoint's classifier (rows of `<cfg.classifier>.weight`), or None without one."""
    weight = state_dict.get(f"{cfg.classifier}.weight") if cfg.classifier else None
    return int(weight.shape[0]) if weight is not None and weight.ndim >= 1 else None


def _construction(
    *, on_meta: bool, init_once: bool, pruned: bool
) -> contextlib.AbstractContextManager[KeptStorage | None]:
    """Where the constructor's parameters go: meta, for a checkpoint to fill or for the model's init_all_weights
    to write each once, or real and initialised by the constructor. For an init in one pass the memory each
    parameter was allocated in is kept for it, unless the model is to be pruned (its layers change shape:
    keeping the full model's memory through pruning would only add to the peak)."""
    from zoo.services.weights.meta import parameters_on_meta

    if on_meta or init_once:
        # parameters only: buffers (some non-persistent, never in a checkpoint) must be computed for real
        return parameters_on_meta(keep_storage=init_once and not pruned)
    return contextlib.nullcontext()


def initialises_itself(spec: ModelSpec) -> bool:
    """Whether spec's constructor is a class defining its own init_all_weights (protocols.InitialisesOnce)."""
    constructor = spec.constructor
    # the class's own definition only: an inherited one may not know a subclass's extra layers or init
    return isinstance(constructor, type) and callable(vars(constructor).get("init_all_weights"))


def _init_once(model: nn.Module, device: torch.device, kept: KeptStorage | None) -> None:
    """Materialise the parameters built on meta (on device, in the memory kept for them) and run the model's
    init_all_weights over them."""
    from zoo.services.weights.meta import materialize_parameters, meta_tensors

    assert isinstance(model, InitialisesOnce)  # narrowed by initialises_itself: its class defines the method
    materialize_parameters(model, device, kept=kept)
    # drawing the random weights is most of the work; on the CPU it runs on torch's threads
    with parallel_random_fills() if device.type == "cpu" else contextlib.nullcontext():
        model.init_all_weights()
    left = meta_tensors(model)
    if left:  # init_all_weights writes on real storage only; a meta tensor left here is a bug in the family
        raise RuntimeError(f"{type(model).__name__}: {left[:5]} still on the meta device after init_all_weights")


# What torch says when a tensor cannot be allocated; the allocator reports it as a RuntimeError.
_ALLOCATION_FAILURES = ("can't allocate memory", "not enough memory", "out of memory")


def _construct(spec: ModelSpec, kwargs: dict[str, object]) -> nn.Module:
    """spec.constructor(**kwargs); a model too large to allocate is the caller's request, so a ZooError."""
    with _allocation_is_the_request(spec, kwargs):
        model: object = spec.constructor(**kwargs)
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(
            f"model {spec.name!r} was built as {type(model).__qualname__}, which is not a torch.nn.Module; "
            "a registered constructor must be an nn.Module subclass or a function returning an nn.Module"
        )
    return model


@contextlib.contextmanager
def _allocation_is_the_request(spec: ModelSpec, kwargs: dict[str, object]) -> Iterator[None]:
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not any(s in str(e) for s in _ALLOCATION_FAILURES):
            raise  # anything else is a bug in the constructor: let it show as one
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k in ("num_classes", "in_chans"))
        raise InvalidValueError(
            f"{spec.name} with {shown} (and its other keywords) needs more memory than can be allocated; "
            "ask for fewer classes, input channels or a smaller width"
        ) from None


@attrs.frozen(eq=False)
class Built:
    """What Builder.build made: the model and, complete, the cfg that describes it and the record that rebuilds it.

    The model carries both as well (`default_cfg`, also as `pretrained_cfg`, and `build_record`), set once.
    """

    model: nn.Module  # a feature extractor when the request is features_only
    cfg: DefaultCfg
    record: BuildRecord


class Builder:
    """Instantiates, prunes, loads weights into and wraps models; each step is a service."""

    def __init__(
        self,
        *,
        weight_loader: WeightLoader | None = None,
        weight_applier: WeightApplier | None = None,
        pruner: Pruner | None = None,
        feature_factory: FeatureWrapperFactory | None = None,
    ) -> None:
        self.weight_loader = weight_loader
        self.weight_applier = weight_applier
        self.pruner = pruner
        self.feature_factory = feature_factory

    def model_args(self, spec: ModelSpec, request: BuildRequest) -> dict[str, object]:
        """The constructor's keywords: the spec's model_args, the request's, and num_classes and in_chans (given,
        or the request's cfg's) where the constructor takes them; one it does not take raises InvalidArgumentError.

        Any nn.Module constructor may be registered: one that does not take num_classes or in_chans builds its
        own head and stem.
        """
        cfg = request.cfg
        clash = sorted(set(request.model_args) & set(_BUILDER_ARGS))
        if clash:
            raise InvalidArgumentError(f"pass {clash} as create_model arguments, not model keywords")
        kwargs: dict[str, object] = {**spec.model_args, **request.model_args}
        accepted = constructor_params(spec)
        num_classes, in_chans = _builder_args(request, cfg)
        if accepted is None or "num_classes" in accepted:
            kwargs["num_classes"] = num_classes
        if accepted is None or "in_chans" in accepted:
            kwargs["in_chans"] = in_chans
        if accepted is not None:
            bad = sorted(set(kwargs) - set(accepted))
            if bad:
                # every keyword the constructor takes, defaults of this name included (they can be overridden)
                user_args = sorted(set(accepted) - set(_BUILDER_ARGS))
                raise InvalidArgumentError(
                    f"{spec.name} does not take keyword(s) {', '.join(map(repr, bad))}; "
                    f"it takes: {', '.join(user_args) or 'no model keywords'} "
                    "(num_classes and in_chans are create_model arguments)"
                )
        return kwargs

    def build(self, spec: ModelSpec, request: BuildRequest) -> Built:
        """Build the model the request describes, with the cfg that describes it and its complete BuildRecord."""
        cfg = request.cfg
        kwargs = self.model_args(spec, request)
        wants_weights = request.pretrained or request.checkpoint_path is not None
        self._check_available(spec, request, wants_weights)
        assert self.weight_loader is not None or not wants_weights  # narrowed by _check_available

        num_classes, in_chans = _builder_args(request, cfg)
        _check_fixed_stem(spec, kwargs, request, in_chans, cfg)

        state_dict: dict[str, torch.Tensor] | None = None
        if wants_weights and self.weight_loader is not None:
            # read the checkpoint first: a bad one fails before any model memory is spent
            loader = loader_for(self.weight_loader, request.cache_dir)
            state_dict = loader.load_state_dict(cfg, checkpoint_path=request.checkpoint_path)
            # unasked, the model takes the class count of the checkpoint in hand: cfg.num_classes
            # describes the published weights, and a user's file may be fine-tuned to any other
            classes = checkpoint_classes(state_dict, cfg) if request.num_classes is None else None
            if classes is not None:
                num_classes = classes
                if "num_classes" in kwargs:
                    kwargs["num_classes"] = classes
        # the meta device skips random init; the applier materialises what the checkpoint lacks
        on_meta = state_dict is not None
        # a family that initialises every tensor itself is initialised once, after pruning
        # (not when the caller builds under torch.device("meta"): then nothing is to be initialised)
        device = torch.get_default_device()
        init_once = state_dict is None and device.type != "meta" and initialises_itself(spec)
        layout = _layout_to_build(spec, request) if self.pruner is not None else None
        with _construction(on_meta=on_meta, init_once=init_once, pruned=layout is not None) as kept:
            model = _construct(spec, kwargs)
        if "num_classes" not in kwargs:
            num_classes = _fit_head(model, spec, request.num_classes, num_classes)
        if layout is not None and self.pruner is not None:
            model = self.pruner.prune(model, layout)
        if init_once:
            with _allocation_is_the_request(spec, kwargs):  # pruned layers' parameters are allocated here
                _init_once(model, device, kept)
        if state_dict is not None and self.weight_applier is not None:
            model = self.weight_applier(model, state_dict, spec, cfg, request, on_meta)
        image_size = image_size_built_for(model)
        if request.features_only:
            assert self.feature_factory is not None  # narrowed by _check_available
            model = self.feature_factory.wrap(
                model,
                spec.feature_cfg,
                out_indices=request.out_indices,
                feature_cls=request.feature_cls,
                **({} if request.out_map is None else {"out_map": request.out_map}),
            )
        resolved = adapt_cfg(
            cfg, num_classes=num_classes, in_chans=in_chans, features_only=request.features_only, image_size=image_size
        )
        names = request.label_names
        # the builder's arguments the constructor took: what rebuilds this model
        taken = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans)) if k in kwargs}
        record = BuildRecord(
            architecture=spec.name,
            model_args={**request.model_args, **taken},
            # class names describe a classifier of as many classes: kept only while the model has one
            label_names=names if isinstance(model, ClassifierHead) and model.num_classes == len(names) else (),
            prune_spec=request.prune_spec,  # the layout is part of what rebuilds the model (save_pretrained)
        )
        object.__setattr__(model, "default_cfg", resolved)
        object.__setattr__(model, "pretrained_cfg", resolved)  # the name timm users look for
        object.__setattr__(model, "build_record", record)
        return Built(model=model, cfg=resolved, record=record)

    def _check_available(self, spec: ModelSpec, request: BuildRequest, wants_weights: bool) -> None:
        if wants_weights and (self.weight_loader is None or self.weight_applier is None):
            missing = "WeightLoader" if self.weight_loader is None else "WeightApplier"
            raise FeatureNotAvailableError(f"pretrained weights are not available: this Builder has no {missing}")
        if wants_weights and self.weight_loader is not None:
            loader_for(self.weight_loader, request.cache_dir)  # refuses a cache_dir the loader cannot take
        if request.features_only and self.feature_factory is None:
            raise FeatureNotAvailableError(
                "features_only is not available in this ModelZoo: no FeatureWrapperFactory was configured"
            )
        if not request.features_only and (
            request.out_indices is not None or request.feature_cls is not None or request.out_map is not None
        ):
            raise InvalidValueError("out_indices, feature_cls and out_map need features_only=True")
        if _layout_to_build(spec, request) is not None and self.pruner is None:
            raise FeatureNotAvailableError(f"{spec.name} would be pruned, and this ModelZoo has no Pruner")


def loader_for(loader: WeightLoader, cache_dir: str | None) -> WeightLoader:
    """loader, or for a call with a cache_dir (create_model's) the loader fetching into that directory."""
    if cache_dir is None:
        return loader
    if not isinstance(loader, RelocatableCache):
        raise FeatureNotAvailableError(
            f"cache_dir={cache_dir!r} needs a weight loader that can fetch into another directory "
            f"(zoo.domain.protocols.RelocatableCache: with_cache_dir); this ModelZoo's {type(loader).__qualname__} "
            "cannot: configure its own cache instead"
        )
    return loader.with_cache_dir(cache_dir)


def image_size_built_for(model: nn.Module) -> tuple[int, int] | None:
    """image_size_built_for() of a model that says (a ViT's img_size: protocols.BuiltForImageSize), else None."""
    size: object = model.image_size_built_for() if isinstance(model, BuiltForImageSize) else None
    return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) and len(size) == 2 else None


def _builder_args(request: BuildRequest, cfg: DefaultCfg) -> tuple[int, int]:
    """(num_classes, in_chans) the request asks for: its own, else the cfg's."""
    num_classes = cfg.num_classes if request.num_classes is None else request.num_classes
    in_chans = cfg.input_size[0] if request.in_chans is None else request.in_chans
    return num_classes, in_chans


def _check_fixed_stem(
    spec: ModelSpec, kwargs: Mapping[str, object], request: BuildRequest, in_chans: int, cfg: DefaultCfg
) -> None:
    """Refuse an in_chans a constructor cannot be asked for (it does not take the keyword), before any work."""
    if "in_chans" not in kwargs and request.in_chans is not None and in_chans != cfg.input_size[0]:
        raise InvalidArgumentError(
            f"{spec.name} does not take in_chans (its constructor has no such keyword), so in_chans={in_chans} "
            f"cannot be built; its cfg's input has {cfg.input_size[0]} channels"
        )


def _fit_head(model: nn.Module, spec: ModelSpec, asked: int | None, default: int) -> int:
    """The class count of a model whose constructor does not take num_classes, its head replaced when asked for
    another (which needs the model's ClassifierHead); an unasked count is the model's own where it says."""
    if not isinstance(model, ClassifierHead):
        if asked is None:
            return default
        missing = lacking(model, ClassifierHead)
        raise ModelSurfaceError(
            f"num_classes={asked} for {spec.name} ({type(model).__qualname__}) needs a classifier head to replace: "
            f"its constructor does not take num_classes, and the model lacks {', '.join(missing)} "
            "(zoo.domain.protocols.ClassifierHead)",
            missing=missing,
        )
    if asked is not None and asked != model.num_classes:
        model.reset_classifier(asked)
    return int(model.num_classes)


def _layout_to_build(spec: ModelSpec, request: BuildRequest) -> PruneSpec | None:
    """The channel layout to prune to: the caller's, which replaces the one a pruned name is registered with."""
    return request.prune_spec if request.prune_spec is not None else spec.prune_layout
