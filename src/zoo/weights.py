"""Published weights ahead of use: a name's weights fetched into the cache, and zoo's own cache listed or cleared.

Weights from URLs are kept in zoo's cache (ZOO_CACHE_DIR); weights from the Hugging Face hub in the
Hugging Face cache, which other libraries share: zoo says where it is and never clears it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from zoo import api
from zoo.domain.errors import FeatureNotAvailableError

if TYPE_CHECKING:
    from zoo.services.weights import CachedWeightLoader, CacheEntry

__all__ = ["CacheContents", "ClearedCache", "cache_contents", "clear_cache", "fetch_weights", "weight_loader"]


def weight_loader(
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
) -> CachedWeightLoader:
    """zoo's standard WeightLoader (for `ModelZoo(weight_loader=...)`); what is left unset follows the environment.

    cache_dir: zoo's cache (default ZOO_CACHE_DIR, else the user's cache directory); offline: no network,
    the caches only (default ZOO_OFFLINE); progress: a download bar (default: on a terminal only).
    """
    from zoo.services.weights import CachedWeightLoader

    return CachedWeightLoader(cache_dir=cache_dir, offline=offline, progress=progress)


def fetch_weights(name: str, *, progress: bool | None = None, zoo: api.ModelZoo | None = None) -> Path:
    """Make sure the weights name (NAME.TAG, NAME, or a saved model) names are cached, through zoo's WeightLoader.

    Returns the local path of the checkpoint: in zoo's cache, the Hugging Face cache, or on disk.
    progress=None leaves the bar to the loader (by default: on a terminal only).
    """
    zoo = zoo or api.default_zoo()
    cfg = zoo.get_default_cfg(name)
    loader = zoo.builder.weight_loader
    fetch = getattr(loader, "fetch", None)
    if not callable(fetch):  # not part of the WeightLoader protocol: a loader of one's own may not have it
        raise FeatureNotAvailableError(
            f"{name!r} cannot be fetched ahead of use: this ModelZoo's WeightLoader ({type(loader).__qualname__}) "
            "has no fetch(cfg, *, progress) -> Path"
        )
    return Path(fetch(cfg, progress=progress))


@attrs.frozen(kw_only=True)
class CacheContents:
    """What zoo's cache holds (the files zoo wrote there, by key), where it is, and where the hub's cache is."""

    root: Path
    hub_cache: Path
    entries: tuple[CacheEntry, ...]

    @property
    def size(self) -> int:
        """The cached files' total size in bytes."""
        return sum(e.size for e in self.entries)


@attrs.frozen(kw_only=True)
class ClearedCache:
    """What clear_cache removed from root (complete downloads: their count and bytes); hub_cache is left as it was."""

    root: Path
    hub_cache: Path
    files: int
    size: int


def cache_contents(*, cache_dir: str | os.PathLike[str] | None = None) -> CacheContents:
    """The weights in zoo's cache (default ZOO_CACHE_DIR, else the user's cache directory), sorted by key."""
    from zoo.services.weights import WeightCache, WeightSettings

    settings = WeightSettings.resolve(cache_dir=cache_dir)
    cache = WeightCache(settings.cache_dir)
    return CacheContents(root=cache.root, hub_cache=settings.hub_cache_dir, entries=tuple(cache.entries()))


def clear_cache(*, cache_dir: str | os.PathLike[str] | None = None) -> ClearedCache:
    """Delete the files zoo wrote in its cache (downloads, partial ones, locks, digests) and nothing else.

    Other files there are kept, and the Hugging Face cache is never touched (manage it with `hf cache`).
    """
    from zoo.services.weights import WeightCache, WeightSettings

    settings = WeightSettings.resolve(cache_dir=cache_dir)
    cache = WeightCache(settings.cache_dir)
    files, size = cache.clear()
    return ClearedCache(root=cache.root, hub_cache=settings.hub_cache_dir, files=files, size=size)
