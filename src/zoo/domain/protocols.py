"""The contracts the api depends on, so a test or an application can hand in its own parts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from zoo.domain.values import BuildRequest, DefaultCfg, FeatureCfg, ModelSpec

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from zoo.domain.prune import PruneSpec


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
    ) -> nn.Module:
        """A module returning the selected taps, with feature_info for them.

        out_indices and feature_cls override cfg; invalid ones raise InvalidFeatureRequestError
        naming the valid range and the tap modules.
        """
        ...
