"""ChannelPruner, the standard Pruner service: applies and checks prune specs, derives them from weights."""

from __future__ import annotations

from torch import nn

from zoo.domain.errors import PruneSpecError
from zoo.domain.prune import PruneSpec, parse_prune_spec
from zoo.services.pruner.apply import apply_spec, check_spec
from zoo.services.pruner.derive import derive_spec

__all__ = ["ChannelPruner"]


class ChannelPruner:
    """The standard Pruner: applies prune specs, checks them, derives them from weight magnitudes."""

    def prune(self, model: nn.Module, spec: PruneSpec | str) -> nn.Module:
        """The Pruner protocol: apply the spec (a PruneSpec or its interchange text); see apply."""
        return self.apply(model, spec)

    def check(self, model: nn.Module, spec: PruneSpec) -> None:
        """Raise PruneSpecError unless spec fits model; the model is not changed."""
        check_spec(model, spec)

    def apply(self, model: nn.Module, spec: PruneSpec | str) -> nn.Module:
        """Resize model's layers to spec in place (same module names) and return it.

        feature_info channels, num_features and head_hidden_size follow the pruned widths. A spec
        that does not fit raises PruneSpecError before anything is changed.
        """
        if isinstance(spec, str):
            spec = parse_prune_spec(spec)
        elif not isinstance(spec, PruneSpec):
            raise PruneSpecError(f"prune spec {spec!r} is invalid: expected a PruneSpec or its text")
        return apply_spec(model, spec)

    def derive(self, model: nn.Module, ratio: float) -> tuple[PruneSpec, nn.Module]:
        """Prune a copy of model by ratio: keep each channel space's largest-L1 channels.

        Returns the spec (every Conv/BatchNorm/Linear weight's shape) and the pruned copy with the
        kept weights sliced from the original. ratio 0 keeps every channel. A model whose
        structure cannot be pruned raises ZooError naming the layer that blocks it.
        """
        return derive_spec(model, ratio)
