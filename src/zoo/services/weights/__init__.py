"""Pretrained weights: sources, the cache, checkpoint formats, adaptation, and loading into a model."""

from __future__ import annotations

from zoo.services.weights.apply import apply_weights, check_fit
from zoo.services.weights.cache import CacheEntry, WeightCache
from zoo.services.weights.formats import CheckpointResourceError
from zoo.services.weights.loader import CachedWeightLoader, StateDictLoader
from zoo.services.weights.meta import parameters_on_meta
from zoo.services.weights.settings import WeightSettings

__all__ = [
    "CacheEntry",
    "CachedWeightLoader",
    "CheckpointResourceError",
    "StateDictLoader",
    "WeightCache",
    "WeightSettings",
    "apply_weights",
    "check_fit",
    "parameters_on_meta",
]
