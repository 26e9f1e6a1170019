"""Where a checkpoint comes from: a local file, or a remote file (URL or hub id) with its cache location."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

import attrs

from zoo.domain.errors import InvalidValueError, WeightsUnavailableError
from zoo.domain.values import DefaultCfg
from zoo.services.weights.settings import check_url

# Tried in this order for a hub id: safetensors reads without unpickling and maps without copying.
HUB_FILENAMES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# torch.hub's convention: `name-<first hex digits of the sha256>.ext`
_HASH_PREFIX_RE = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


@attrs.frozen(kw_only=True)
class LocalSource:
    """A checkpoint file on this machine, read in place (never copied into the cache)."""

    path: Path
    sha256: str = ""

    def describe(self) -> str:
        """The location, for messages."""
        return str(self.path)


@attrs.frozen(kw_only=True)
class RemoteSource:
    """A checkpoint behind a URL, kept in the cache under cache_key once downloaded and verified."""

    url: str
    cache_key: PurePosixPath
    sha256: str = ""
    hash_prefix: str = ""

    def describe(self) -> str:
        """The location, for messages."""
        return self.url


Source: TypeAlias = LocalSource | RemoteSource


def hash_prefix(filename: str) -> str:
    """The sha256 prefix a `name-<hex>.ext` file name carries, or ''."""
    m = _HASH_PREFIX_RE.search(filename)
    return m.group(1) if m else ""


def url_source(url: str, *, sha256: str = "") -> RemoteSource:
    """A URL (http, https, file) and where the cache keeps it: urls/<digest of the url>/<file name>."""
    check_url(url, "url")
    name = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
    if not _SAFE_NAME_RE.match(name):
        name = "checkpoint"  # a name that could escape the cache dir or is empty: the content decides the format
    # the digest keeps two URLs with the same file name apart
    key = PurePosixPath("urls", hashlib.sha256(url.encode()).hexdigest()[:16], name)
    return RemoteSource(url=url, cache_key=key, sha256=sha256, hash_prefix=hash_prefix(name))


def hub_sources(hub_id: str, *, endpoint: str, sha256: str = "") -> tuple[RemoteSource, ...]:
    """The candidate files of a hub repo, safetensors first: {endpoint}/{repo}/resolve/main/{file}."""
    if not _HUB_ID_RE.match(hub_id) or ".." in hub_id:
        raise InvalidValueError(
            f"hf_hub_id={hub_id!r} is invalid: expected 'org/name' (letters, digits, '.', '_', '-')"
        )
    folder = hub_id.replace("/", "--")
    return tuple(
        RemoteSource(
            url=f"{endpoint}/{hub_id}/resolve/main/{filename}",
            cache_key=PurePosixPath("hub", folder, filename),
            sha256=sha256,
        )
        for filename in HUB_FILENAMES
    )


def location_source(location: str, *, sha256: str = "") -> Source:
    """A path, or a URL when it has a scheme (checkpoint_path= and cfg.file accept both)."""
    if "://" in location:
        return url_source(location, sha256=sha256)
    return LocalSource(path=Path(location).expanduser(), sha256=sha256)


def resolve_sources(cfg: DefaultCfg, *, checkpoint_path: str | None, hub_endpoint: str) -> tuple[Source, ...]:
    """Candidate sources in order: checkpoint_path, else cfg.file, else the hub files, then cfg.url."""
    if checkpoint_path is not None:
        return (location_source(checkpoint_path),)
    if cfg.file:
        return (location_source(cfg.file, sha256=cfg.sha256),)
    # cfg.sha256 describes the file the cfg publishes; whichever remote candidate serves it must match
    sources: list[Source] = []
    if cfg.hf_hub_id:
        sources.extend(hub_sources(cfg.hf_hub_id, endpoint=hub_endpoint, sha256=cfg.sha256))
    if cfg.url:
        sources.append(url_source(cfg.url, sha256=cfg.sha256))
    if not sources:
        tag = f" (tag {cfg.tag!r})" if cfg.tag else ""
        raise WeightsUnavailableError(
            f"this model's cfg{tag} names no weights (no url, hf_hub_id or file); "
            "pass checkpoint_path=..., or pretrained_cfg_overlay={'file': ...} or {'url': ...}"
        )
    return tuple(sources)
