"""The contracts the api depends on, so a test or an application can hand in its own parts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from zoo.domain.values import DefaultCfg, FeatureCfg, FeatureInfo, ModelSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


@runtime_checkable
class ZooModel(Protocol):
    """The surface every architecture class exposes (besides being an nn.Module)."""

    num_classes: int
    num_features: int
    feature_info: list[FeatureInfo]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled final feature map (or token sequence)."""
        ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify the output of forward_features; pre_logits stops before the classifier."""
        ...

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (0 removes it) and optionally the pooling."""
        ...

    def get_classifier(self) -> nn.Module:
        """The classifier module (Identity when there is none)."""
        ...


class SpecSource(Protocol):
    """Where the Builder's caller finds specs: a Registry, or anything that answers by name."""

    def get_spec(self, name: str) -> ModelSpec:
        """The spec of a registered name (without tag)."""
        ...


class WeightLoader(Protocol):
    """Finds and reads a checkpoint: a cfg (or explicit path) in, a flat state_dict out."""

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> dict[str, torch.Tensor]:
        """Read the checkpoint for this cfg, or the file at checkpoint_path when given."""
        ...


class Pruner(Protocol):
    """Rebuilds a model's layers at the widths a prune spec names."""

    def prune(self, model: nn.Module, spec_text: str) -> nn.Module:
        """Return the model with its Conv/BatchNorm/Linear modules resized to spec_text."""
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
    ) -> nn.Module:
        """A module returning the selected taps, with feature_info for them.

        out_indices and feature_cls override cfg; invalid ones raise InvalidFeatureRequestError
        naming the valid range and the tap modules.
        """
        ...


class FeatureInfoView(Protocol):
    """The selected taps of a feature extractor, in timm's accessor style."""

    def channels(self) -> list[int]:
        """Channels per selected tap."""
        ...

    def reduction(self) -> list[int]:
        """Stride per selected tap."""
        ...

    def module_name(self) -> list[str]:
        """Dotted module path per selected tap."""
        ...

    def taps(self) -> Sequence[FeatureInfo]:
        """The selected FeatureInfo values."""
        ...
