"""The Pruner: rebuilds a model at a prune spec's widths, and derives specs from weight magnitudes.

probe (meta copies and shape probes) <- cost (parameters, FLOPs, time) and apply (rebuild at a
spec's widths) <- derive (a spec from channel magnitudes) <- channel_pruner (the service).
"""

from __future__ import annotations

from zoo.services.pruner.channel_pruner import ChannelPruner
from zoo.services.pruner.cost import ModelCost, count_flops, measure
from zoo.services.pruner.probe import meta_clone

__all__ = ["ChannelPruner", "ModelCost", "count_flops", "measure", "meta_clone"]
