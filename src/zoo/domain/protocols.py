"""The contracts the api depends on, so a test or an application can hand in its own parts; and the model
surface, which is how services see a model.

A registered constructor may return any nn.Module. The model surface is a set of small structural
Protocols, one per capability a service needs (a classifier head, feature taps, forward_intermediates,
...): a service checks the one it needs, with isinstance, where it needs it, and a model without it gets a
ModelSurfaceError naming the members it lacks. zoo's architectures (zoo.archs.base.ZooModule) have all of
ModelSurface. Members that are attributes are read-only properties here, so a plain attribute, a property
or a ClassVar satisfies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, overload, runtime_checkable

from zoo.domain.values import BuildRecord, BuildRequest, DefaultCfg, FeatureCfg, FeatureInfo, ModelSpec

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from zoo.domain.grouping import GroupMatcher
    from zoo.domain.prune import PruneSpec

__all__ = [
    "BuiltForImageSize",
    "ClassifierHead",
    "Configured",
    "DecayExemptions",
    "FeatureForward",
    "FeatureWrapperFactory",
    "InitialisesOnce",
    "Intermediates",
    "LayerGroups",
    "LayerPruning",
    "ModelSurface",
    "Pruner",
    "Recorded",
    "RelocatableCache",
    "TapStrategies",
    "Tapped",
    "WeightApplier",
    "WeightLoader",
    "lacking",
    "surface_members",
]


class WeightLoader(Protocol):
    """Finds and reads a checkpoint: a cfg (or explicit path) in, a flat state_dict out; and single hub files."""

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> dict[str, torch.Tensor]:
        """Read the checkpoint for this cfg, or the file at checkpoint_path when given."""
        ...

    def fetch_hub_file(self, hub_id: str, filename: str) -> Path:
        """A local path to one file of hub repo hub_id ('org/name' or 'org/name@revision').

        An `hf-hub:` saved model's config.json is read through this, so a loader that serves weights
        from elsewhere (a mirror, a fake in a test) serves the config too. A loader without hub access
        raises a WeightsError subclass naming the repo and file.
        """
        ...


@runtime_checkable
class RelocatableCache(Protocol):
    """A WeightLoader that can fetch into another directory for one call (create_model's cache_dir)."""

    def with_cache_dir(self, cache_dir: str) -> WeightLoader:
        """A loader like this one whose downloads (hub files too) go to and are looked up in cache_dir."""
        ...


class Pruner(Protocol):
    """Rebuilds a model's layers at the widths a prune spec names."""

    def prune(self, model: nn.Module, spec: PruneSpec) -> nn.Module:
        """Return the model with its Conv/BatchNorm/Linear modules resized to spec."""
        ...


class WeightApplier(Protocol):
    """Loads a checkpoint into a freshly built model; the standard one is zoo.services.weights.apply_weights."""

    def __call__(
        self,
        model: nn.Module,
        state_dict: dict[str, torch.Tensor],
        spec: ModelSpec,
        cfg: DefaultCfg,
        request: BuildRequest,
        on_meta: bool,
        /,
    ) -> nn.Module:
        """The model with state_dict (the checkpoint of cfg, the request's cfg) loaded, adapted to the request.

        on_meta: the model's parameters are on the meta device, to be assigned rather than copied into.
        """
        ...


class FeatureWrapperFactory(Protocol):
    """Turns a classifier model into a multi-scale feature extractor."""

    def wrap(
        self,
        model: nn.Module,
        cfg: FeatureCfg,
        *,
        out_indices: Sequence[int] | None = None,
        feature_cls: str | None = None,
        out_map: Sequence[str] | None = None,
    ) -> nn.Module:
        """A module returning the selected taps, with feature_info for them.

        out_indices and feature_cls override cfg; out_map names a dict extractor's outputs (one name per
        out_indices entry; the tap indices as strings by default); invalid ones raise
        InvalidFeatureRequestError naming the valid range and the tap modules.
        """
        ...


# -- the model surface ------------------------------------------------------------------------------


@runtime_checkable
class ClassifierHead(Protocol):
    """A classifier head that can be read and replaced: what num_classes adaptation and saving need."""

    @property
    def num_classes(self) -> int:
        """Classes the head predicts (0: no classifier)."""
        ...

    @property
    def num_features(self) -> int:
        """Channels of forward_features' output."""
        ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify forward_features' output; pre_logits stops before the classifier."""
        ...

    def get_classifier(self) -> nn.Module:
        """The classifier module (Identity when num_classes is 0)."""
        ...

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one (0 removes it); optionally change the pooling."""
        ...


@runtime_checkable
class FeatureForward(Protocol):
    """A model whose feature map can be computed without its head (the hook extractor runs it)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled final feature map (or token sequence)."""
        ...


@runtime_checkable
class Tapped(Protocol):
    """A model that describes its feature taps: what features_only and export's size ranges need."""

    @property
    def feature_info(self) -> Iterable[FeatureInfo]:
        """One FeatureInfo per tap, in network order (a feature extractor's: the selected taps)."""
        ...


@runtime_checkable
class TapStrategies(Protocol):
    """A model that declares which feature_cls strategies its taps serve (every one unless it says)."""

    feature_classes: ClassVar[tuple[str, ...]]


@runtime_checkable
class Intermediates(Protocol):
    """A model with forward_intermediates: what feature_cls='getter' runs."""

    @overload
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: Literal[False] = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    @overload
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: Literal[True],
    ) -> list[torch.Tensor]: ...

    @overload
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]: ...

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]:
        """(final features, tap outputs at indices), or the tap outputs alone with intermediates_only."""
        ...


@runtime_checkable
class LayerPruning(Protocol):
    """A model that can drop what follows a tap: feature extractors hold only the layers they run."""

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last tap in indices (and the head), returning the kept tap indices."""
        ...


@runtime_checkable
class ModelSurface(ClassifierHead, FeatureForward, Tapped, Intermediates, LayerPruning, Protocol):
    """Every capability above: the surface zoo's architectures have (zoo.archs.base.ZooModule)."""


@runtime_checkable
class Configured(Protocol):
    """A model carrying the cfg it was built with (the Builder attaches it to every model it builds)."""

    @property
    def default_cfg(self) -> DefaultCfg:
        """The cfg describing the model as built."""
        ...

    @property
    def pretrained_cfg(self) -> DefaultCfg:
        """default_cfg, under the name timm users look for."""
        ...


@runtime_checkable
class Recorded(Protocol):
    """A model carrying what rebuilds it (the Builder attaches it; save_pretrained writes it)."""

    @property
    def build_record(self) -> BuildRecord:
        """The architecture and keywords the model was built with."""
        ...


@runtime_checkable
class InitialisesOnce(Protocol):
    """A model that can initialise every tensor itself, once (see zoo.archs.base.ZooModule.init_all_weights)."""

    def init_all_weights(self) -> None:
        """Initialise every parameter and persistent buffer afresh, as construction does."""
        ...


@runtime_checkable
class BuiltForImageSize(Protocol):
    """A model that can say which input size it was built for (a ViT's img_size)."""

    def image_size_built_for(self) -> tuple[int, int] | None:
        """(height, width) the model was built for, or None for a model that takes any size."""
        ...


@runtime_checkable
class LayerGroups(Protocol):
    """A model that groups its parameters from input to output: what zoo.optim's layer-wise lr decay reads.

    Not part of ModelSurface: a model without it still builds, saves and extracts features.
    """

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The rules grouping the parameters: the stem, then each block (each stage with coarse), the head last."""
        ...


@runtime_checkable
class DecayExemptions(Protocol):
    """A model naming parameters to train without weight decay: zoo.optim adds them to the 1-D ones it exempts."""

    def no_weight_decay(self) -> frozenset[str]:
        """Parameter names (fnmatch patterns) trained without weight decay whatever their shape."""
        ...


def surface_members(protocol: type) -> tuple[str, ...]:
    """The members a Protocol declares (its own, then its parent Protocols' in order), each once."""
    names: dict[str, None] = {}
    for base in protocol.__mro__:
        # typing marks every Protocol class so (typing.get_protocol_members arrives only in Python 3.13)
        if base is Protocol or not getattr(base, "_is_protocol", False):
            continue
        declared = (*vars(base).get("__annotations__", {}), *vars(base))
        names.update((n, None) for n in declared if not n.startswith("_"))
    return tuple(names)


def lacking(model: object, protocol: type) -> tuple[str, ...]:
    """The members of protocol that model does not have ((): it satisfies the protocol)."""
    return tuple(name for name in surface_members(protocol) if not hasattr(model, name))
