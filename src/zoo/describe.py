"""What a model name names, found without building the model: a saved model or a registered one, a weight
set or only an architecture, and its layout (parameters on the meta device: no memory, no init); and what
a model costs: parameters, multiply-adds per image (counted on the meta device) and forward time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from zoo import api
from zoo.domain.checks import check_int
from zoo.domain.errors import InvalidValueError
from zoo.domain.values import BuildRequest, DefaultCfg, FeatureInfo, ModelSpec

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from zoo import ZooModule
    from zoo.services.pruner import ModelCost

__all__ = [
    "ModelDescription",
    "count_macs",
    "describe_model",
    "is_saved_name",
    "measure_model",
    "model_layout",
    "names_weights",
]


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


@attrs.frozen(kw_only=True)
class ModelDescription:
    """A model name described from its layout on the meta device: no parameter memory, no init, no weights read."""

    name: str  # as given: NAME, NAME.TAG or a saved model's name
    spec: ModelSpec = attrs.field(repr=False)  # the architecture's
    cfg: DefaultCfg = attrs.field(repr=False)  # the name's (a saved model's own)
    saved: bool  # a local-dir:/hf-hub: saved model
    parameters: int
    layout: ZooModule = attrs.field(eq=False, repr=False)  # model_layout(name)

    @property
    def num_features(self) -> int | None:
        """The width of the features entering the head, where the model says."""
        features = getattr(self.layout, "num_features", None)
        return features if isinstance(features, int) else None

    @property
    def feature_info(self) -> tuple[FeatureInfo, ...]:
        """The model's feature taps."""
        return tuple(getattr(self.layout, "feature_info", ()))

    def macs(self, image_size: int | None = None) -> int:
        """Multiply-adds of its Conv/Linear layers for one square image (default: its cfg's size), on meta."""
        if image_size is None:
            _, height, width = self.cfg.input_size
            image_size = height if height == width else None  # None: the size the model was built for
        return count_macs(self.layout, image_size)


def describe_model(name: str, *, zoo: api.ModelZoo | None = None) -> ModelDescription:
    """The model name names (NAME, NAME.TAG or a saved model) described from model_layout(name): no memory, no init."""
    zoo = zoo or api.default_zoo()
    layout = model_layout(name, zoo=zoo)
    return ModelDescription(
        name=name,
        spec=zoo.get_spec(layout.build_record.architecture),
        cfg=zoo.get_default_cfg(name),
        saved=is_saved_name(name),
        parameters=sum(p.numel() for p in layout.parameters()),
        layout=layout,
    )


def count_macs(model: nn.Module, image_size: int | None = None) -> int:
    """Multiply-adds of model's Conv/Linear layers for one image_size x image_size image, counted on a meta copy.

    No memory is spent and nothing is computed; image_size defaults to the size model was built for, else 224.
    A size torch refuses (kernels larger than the feature map) raises torch's error.
    """
    from zoo.services.pruner import count_flops

    return count_flops(model, _image_size(image_size))


def measure_model(model: nn.Module, *, image_size: int | None = None, repeats: int = 5) -> ModelCost:
    """model's parameters, multiply-adds (count_macs) and median forward time in seconds (CPU, eval mode, batch 1).

    image_size defaults to the size model was built for, else 224; model is left in the mode it had.
    """
    from zoo.services.pruner import measure

    return measure(model, image_size=_image_size(image_size), repeats=check_int("repeats", repeats, ge=1))


def _image_size(value: int | None) -> int | None:
    return None if value is None else check_int("image_size", value, ge=1)
