"""What a model name names, found without building the model: a saved model or a registered one, a weight
set or only an architecture, and its layout (parameters on the meta device: no memory, no init)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo import api
from zoo.domain.errors import InvalidValueError
from zoo.domain.values import BuildRequest, DefaultCfg, ModelSpec

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from zoo.archs.base import ZooModule

__all__ = ["is_saved_name", "model_layout", "names_weights"]


def is_saved_name(name: object) -> bool:
    """Whether name points at a saved model: `local-dir:PATH` or `hf-hub:org/name[@revision]`."""
    from zoo.services.saved import is_saved_name as saved

    return saved(name)


def names_weights(name: str, *, zoo: api.ModelZoo | None = None) -> bool:
    """Whether name names weights: a saved model, or NAME.TAG; a bare registered name names an architecture.

    An unregistered name raises UnknownModelError (with close matches), as create_model would.
    """
    if not isinstance(name, str):
        raise InvalidValueError(f"name={name!r} is invalid: expected a model name (str)")
    if is_saved_name(name):
        return True
    spec, _ = (zoo or api.default_zoo()).registry.resolve(name)
    return name != spec.name


def model_layout(name: str, *, zoo: api.ModelZoo | None = None) -> ZooModule:
    """The model name names (NAME, NAME.TAG or a saved model), its parameters on the meta device.

    Its layout, widths, feature taps, parameter count, default_cfg and build_record are those
    create_model(name, pretrained=True) gives, without parameter memory, random init or weights read.
    A saved model's config.json is read (from the hub for an hf-hub: name); its weights are not.
    """
    zoo = zoo or api.default_zoo()
    layout = api.ModelZoo(
        registry=zoo.registry,
        weight_loader=_NoWeights(zoo),
        weight_applier=_keep_layout,
        pruner=zoo.builder.pruner,
    )
    # "pretrained" with an empty checkpoint: the builder constructs on meta, as it does for weights to come
    return layout.create_model(name, pretrained=True)


class _NoWeights:
    """A WeightLoader whose checkpoints are empty; hub files (a saved model's config.json) come from zoo's."""

    def __init__(self, zoo: api.ModelZoo) -> None:
        self._zoo = zoo

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> dict[str, torch.Tensor]:
        return {}

    def fetch_hub_file(self, hub_id: str, filename: str) -> Path:
        loader = self._zoo.builder.weight_loader
        assert loader is not None  # a ModelZoo's builder always has one
        return loader.fetch_hub_file(hub_id, filename)


def _keep_layout(
    model: nn.Module, state_dict: object, spec: ModelSpec, cfg: DefaultCfg, request: BuildRequest, on_meta: bool
) -> nn.Module:
    return model  # nothing to apply: the parameters stay on meta
