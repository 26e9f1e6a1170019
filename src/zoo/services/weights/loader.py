"""The default WeightLoader (sources through the cache to a state_dict), and an in-memory one."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from zoo.domain.errors import (
    CheckpointFormatError,
    ChecksumMismatchError,
    HubFileNotFoundError,
    InvalidValueError,
    WeightsError,
    WeightsUnavailableError,
)
from zoo.domain.values import DefaultCfg
from zoo.services.paths import expand_user
from zoo.services.weights.cache import WeightCache, file_sha256
from zoo.services.weights.download import download, progress_default, verify_checksum
from zoo.services.weights.formats import (
    CheckpointResourceError,
    StateDict,
    check_file,
    read_checkpoint,
    resource_error,
)
from zoo.services.weights.hub import HubClient, HubSource, hub_source
from zoo.services.weights.settings import CACHE_DIR_ENV, OFFLINE_ENV, WeightSettings
from zoo.services.weights.sources import LocalSource, RemoteSource, Source, resolve_sources

log = logging.getLogger("zoo.weights")


class CachedWeightLoader:
    """Local files, URLs (http, https, file) through zoo's verified cache, and hub repos through huggingface_hub.

    Unset arguments are read at each call from ZOO_CACHE_DIR and ZOO_OFFLINE, and for the hub from
    HF_ENDPOINT, HF_HUB_CACHE (or HF_HOME), HF_HUB_OFFLINE and HF_TOKEN, so one loader follows the
    environment it runs in. progress=None shows a bar on a terminal only.
    """

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        hub_endpoint: str | None = None,
        hub_cache_dir: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
        progress: bool | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._cache_dir = cache_dir
        self._hub_endpoint = hub_endpoint
        self._hub_cache_dir = hub_cache_dir
        self._offline = offline
        self.progress = progress
        self.timeout = timeout

    def with_cache_dir(self, cache_dir: str | os.PathLike[str]) -> CachedWeightLoader:
        """This loader with cache_dir as its cache, for hub files as well (as timm's cache_dir is); the rest kept."""
        return CachedWeightLoader(
            cache_dir=cache_dir,
            hub_endpoint=self._hub_endpoint,
            hub_cache_dir=cache_dir,
            offline=self._offline,
            progress=self.progress,
            timeout=self.timeout,
        )

    def settings(self) -> WeightSettings:
        """The settings in force now: explicit arguments, else the environment."""
        return WeightSettings.resolve(
            cache_dir=self._cache_dir,
            hub_endpoint=self._hub_endpoint,
            hub_cache_dir=self._hub_cache_dir,
            offline=self._offline,
        )

    def cache(self) -> WeightCache:
        """The cache in force now."""
        return WeightCache(self.settings().cache_dir)

    def hub(self) -> HubClient:
        """The hub client in force now."""
        return self._hub_client(self.settings())

    def _hub_client(self, settings: WeightSettings) -> HubClient:
        return HubClient(
            endpoint=settings.hub_endpoint,
            cache_dir=settings.hub_cache_dir,
            offline=settings.hub_offline,
            offline_env=settings.hub_offline_env,
            token=settings.hub_token,
            token_env=settings.hub_token_env,
            timeout=self.timeout,
        )

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> StateDict:
        """Read the checkpoint for this cfg (or at checkpoint_path), downloading it into the cache if needed."""
        return self._first_available(cfg, checkpoint_path, self.progress, read=True)[1]

    def fetch(self, cfg: DefaultCfg, *, progress: bool | None = None) -> Path:
        """Make sure the cfg's checkpoint is in the cache (or on disk) and return its path."""
        return self._first_available(cfg, None, progress if progress is not None else self.progress, read=False)[0]

    def fetch_hub_file(self, hub_id: str, filename: str, *, progress: bool | None = None) -> Path:
        """One file of a hub repo ('org/name[@revision]'), from the Hugging Face cache or downloaded into it."""
        source = hub_source(hub_id, filenames=(filename,))
        hub = self.hub()
        cached = hub.cached(source, filename)
        if cached is not None:
            return cached
        show = progress_default() if progress is None else progress
        return hub.download(source, filename, progress=show)

    def _first_available(
        self, cfg: DefaultCfg, checkpoint_path: str | None, progress: bool | None, *, read: bool
    ) -> tuple[Path, StateDict]:
        settings = self.settings()
        cache = WeightCache(settings.cache_dir)
        hub = self._hub_client(settings)
        show = progress_default() if progress is None else progress
        sources = resolve_sources(cfg, checkpoint_path=checkpoint_path)
        # every source's cached copy before any network: a slow or hanging earlier source must not
        # delay a checkpoint that is already here
        for source in sources:
            if isinstance(source, RemoteSource) and cache.path(source.cache_key).is_file():
                return cache.path(source.cache_key), _read_cached(cache, source, read=read)
            if isinstance(source, HubSource):
                for filename in source.filenames:
                    path = hub.cached(source, filename)
                    if path is not None:
                        return path, _read_hub(cache, source, filename, path, read=read)
        failures: list[WeightsUnavailableError] = []
        for source in sources:
            try:
                if isinstance(source, LocalSource):
                    return source.path, _read_local(source, read=read)
                if isinstance(source, HubSource):
                    path, filename = self._hub_file(source, hub, progress=show)
                    return path, _read_hub(cache, source, filename, path, read=read)
                return self._remote(source, cache, offline=settings.offline, progress=show, read=read)
            except WeightsUnavailableError as e:
                # not found or unreachable here: the next candidate (the url after the hub) may serve it
                failures.append(e)
        if settings.offline and not any(_on_this_machine(s) for s in sources):
            looked = [_cached_place(s, cache, hub) for s in sources]
            raise WeightsUnavailableError(
                f"{OFFLINE_ENV}=1 and the checkpoint is not in the cache: looked for {'; '.join(looked)}; "
                f"fetch it while online (zoo fetch NAME.TAG), or unset {OFFLINE_ENV}"
            )
        first = failures[0]
        if len(failures) == 1:
            raise first
        # the first (preferred) source's kind of failure, with every place tried
        raise type(first)("no source could serve the checkpoint: " + "; ".join(map(str, failures)))

    def _hub_file(self, source: HubSource, hub: HubClient, *, progress: bool) -> tuple[Path, str]:
        """The first of source.filenames the repo has, downloaded; a repo or access failure stops at once."""
        missing: list[str] = []
        for filename in source.filenames:
            try:
                return hub.download(source, filename, progress=progress), filename
            except HubFileNotFoundError:
                missing.append(filename)  # the repo is there: its other candidate file may be
        raise HubFileNotFoundError(f"hub repo {source.describe()} at {hub.endpoint} has none of {', '.join(missing)}")

    def _remote(
        self, source: RemoteSource, cache: WeightCache, *, offline: bool, progress: bool, read: bool
    ) -> tuple[Path, StateDict]:
        path = cache.path(source.cache_key)
        # files enter the cache whole and verified (atomic rename), so a hit needs no lock
        if not path.is_file():
            if offline and not _on_this_machine(source):  # a file: url is read from disk, no network
                raise WeightsUnavailableError(f"{path} is not in the cache ({OFFLINE_ENV}=1)")
            try:
                with cache.locked(source.cache_key):
                    if not path.is_file():  # else another process fetched it while this one waited
                        return path, self._download(source, cache, progress=progress)
            except OSError as e:  # the download's own failures are ZooErrors; this is the cache directory
                raise WeightsError(
                    f"cannot write to the weights cache {cache.root} ({e}); set {CACHE_DIR_ENV} to a writable directory"
                ) from None
        return path, _read_cached(cache, source, read=read)

    def _download(self, source: RemoteSource, cache: WeightCache, *, progress: bool) -> StateDict:
        log.info("downloading %s to %s", source.url, cache.path(source.cache_key))
        kept: CheckpointResourceError | None = None
        with cache.staging(source.cache_key) as staged:
            sha256 = download(source, staged.file, progress=progress, timeout=self.timeout)
            staged.finish()
            # read before the rename: a file whose bytes are wrong never becomes a cache entry.
            # Mapped tensors stay valid across the rename (same inode).
            try:
                state_dict = read_checkpoint(staged.path, origin=source.url)
            except CheckpointResourceError as e:
                kept = e  # the bytes arrived whole and verified; only reading them failed, so they stay
        cache.remember_digest(source.cache_key, sha256)
        if kept is not None:
            raise kept
        return state_dict


def _on_this_machine(source: Source) -> bool:
    """Whether a source is read from this machine's disk (a path, or a file: url): offline mode allows it."""
    return isinstance(source, LocalSource) or (isinstance(source, RemoteSource) and _is_file_url(source.url))


def _is_file_url(url: str) -> bool:
    return url[:5].lower() == "file:"


def _cached_place(source: Source, cache: WeightCache, hub: HubClient) -> str:
    """Where a source's cached copy would be, for messages."""
    if isinstance(source, RemoteSource):
        return str(cache.path(source.cache_key))
    if isinstance(source, HubSource):
        return f"{', '.join(source.filenames)} of hub repo {source.describe()} in {hub.cache_dir}"
    return str(source.path)


def _read_local(source: LocalSource, *, read: bool) -> StateDict:
    check_file(source.path, str(source.path))
    if source.sha256:
        actual = file_sha256(source.path)
        if actual != source.sha256:
            raise ChecksumMismatchError(
                f"{source.path}: sha256 is {actual}, expected {source.sha256} (DefaultCfg.sha256)"
            )
    return read_checkpoint(source.path) if read else {}


def _read_cached(cache: WeightCache, source: RemoteSource, *, read: bool) -> StateDict:
    """A cache hit, verified like a download (by the digest remembered while the file is unchanged)."""
    if source.sha256 or source.hash_prefix:
        # a digest recorded when the file was downloaded (and checked) says its bytes are the ones the url served
        verified = cache.remembered_digest(source.cache_key)
        try:
            sha256 = verified or cache.digest(source.cache_key)
        except OSError as e:  # hashing could not read the file: nothing is known about its bytes
            raise resource_error(source.url, e) from None
        if verified is not None:
            _check_request_digest(source, verified, cache)
        try:
            verify_checksum(source, sha256, outcome="the cached copy was removed, so the next load downloads it again")
        except ChecksumMismatchError:
            cache.remove(source.cache_key)  # bytes changed since they were cached: a new download may mend them
            raise
    if not read:
        return {}
    try:
        return read_checkpoint(cache.path(source.cache_key), origin=source.url)
    except CheckpointFormatError as e:
        # bytes that no longer read (disk damage, edited by hand): drop them so a retry downloads anew.
        # A resource error (CheckpointResourceError) says nothing about the bytes and keeps the file.
        cache.remove(source.cache_key)
        raise CheckpointFormatError(f"{e}; the cached copy was removed, so the next load downloads it again") from None


def _check_request_digest(source: RemoteSource, sha256: str, cache: WeightCache) -> None:
    """Refuse a request whose digest disagrees with a cached file's verified one; the file stays, being good."""
    if source.sha256 and sha256 != source.sha256:
        expected = f"expected {source.sha256} (DefaultCfg.sha256) as its sha256, from the cfg or pretrained_cfg_overlay"
    elif source.hash_prefix and not sha256.startswith(source.hash_prefix):
        expected = (
            f"expected it to start with {source.hash_prefix} by the torch.hub file-name rule "
            f"(DefaultCfg.check_hash=True: {source.name!r} ends in -<sha256 prefix>)"
        )
    else:
        return
    raise ChecksumMismatchError(
        f"{source.url}: the cached copy {cache.path(source.cache_key)} has sha256 {sha256}, verified when it was "
        f"downloaded and unchanged since; the request {expected}. The request's hash is the one that disagrees: "
        "the cached file was kept. Correct the sha256 (or check_hash) of the request, or, if the url now serves "
        "other bytes, delete that file and load again"
    )


def _read_hub(cache: WeightCache, source: HubSource, filename: str, path: Path, *, read: bool) -> StateDict:
    """A hub file from the Hugging Face cache, checked against the cfg's sha256 when it has one.

    The file stays where it is whatever is wrong with it: that cache is shared with other libraries.
    """
    origin = f"hub file {source.describe(filename)} ({path})"
    if source.sha256:
        try:
            sha256 = cache.file_digest(path)
        except OSError as e:
            raise resource_error(origin, e) from None
        if sha256 != source.sha256:
            raise ChecksumMismatchError(
                f"{origin}: sha256 is {sha256}, expected {source.sha256} (DefaultCfg.sha256); the file was left in "
                "the Hugging Face cache. If the repo has changed, update the cfg's sha256"
            )
    return read_checkpoint(path, origin=origin) if read else {}


class StateDictLoader:
    """A WeightLoader serving one in-memory state_dict for every cfg (or the file at checkpoint_path)."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self._state_dict = dict(state_dict)

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> StateDict:
        """A copy of the held state_dict; checkpoint_path, when given, is read from disk instead."""
        if checkpoint_path is not None:
            if not checkpoint_path.strip():
                raise InvalidValueError(f"checkpoint_path={checkpoint_path!r} is invalid: expected the path of a file")
            return read_checkpoint(expand_user(checkpoint_path, "checkpoint_path"))
        # the fast path assigns these tensors into the model: each model needs storage of its own,
        # or training one would change the held weights and every other model built from them
        return {k: v.detach().clone() for k, v in self._state_dict.items()}

    def with_cache_dir(self, cache_dir: str | os.PathLike[str]) -> StateDictLoader:
        """This loader: it downloads nothing, so a call's cache_dir changes nothing."""
        return self

    def fetch_hub_file(self, hub_id: str, filename: str) -> Path:
        """The WeightLoader protocol: this loader holds one state_dict and no hub files, so always refused."""
        raise WeightsUnavailableError(
            f"{filename} of hub repo {hub_id!r} is not available: a StateDictLoader serves one in-memory "
            "state_dict and no hub files; give the ModelZoo a CachedWeightLoader (or a loader with hub access)"
        )
