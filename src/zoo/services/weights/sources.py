"""Where a checkpoint comes from: a local file, a URL with its place in zoo's cache, or a hub repo."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

import attrs

from zoo.domain.errors import InvalidValueError, WeightsUnavailableError
from zoo.domain.values import DefaultCfg
from zoo.services.paths import expand_user
from zoo.services.weights.hub import HubSource, hub_source
from zoo.services.weights.settings import check_url

_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# torch.hub's convention: `name-<first hex digits of the sha256>.ext`
_HASH_PREFIX_RE = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
# File systems allow 255 bytes a name; the cache adds a temp-file prefix and suffix beside it, and
# the lock and digest records join the key's parts. Longer names are shortened, kept apart by a digest.
MAX_NAME = 120
_MAX_SUFFIX = 16


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
    name: str = ""  # the file name in the url, which the cache may have shortened

    def describe(self) -> str:
        """The location, for messages."""
        return self.url


Source: TypeAlias = LocalSource | RemoteSource | HubSource


def hash_prefix(filename: str) -> str:
    """The sha256 prefix a `name-<hex>.ext` file name carries, or ''."""
    m = _HASH_PREFIX_RE.search(filename)
    return m.group(1) if m else ""


def short_name(name: str) -> str:
    """name if it fits MAX_NAME, else its start, a digest of the whole and its extension."""
    if len(name.encode()) <= MAX_NAME:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = f".{ext}" if dot and stem and len(ext) < _MAX_SUFFIX else ""
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[: MAX_NAME - len(suffix) - len(digest) - 1]}_{digest}{suffix}"


def url_source(url: str, *, sha256: str = "", check_hash: bool = False) -> RemoteSource:
    """A URL (http, https, file) and where the cache keeps it: urls/<digest of the url>/<file name>.

    check_hash: the file name's `-<hex>` suffix is a sha256 prefix to verify (torch.hub's rule).
    """
    check_url(url, "url")
    name = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
    if not _SAFE_NAME_RE.match(name):
        name = "checkpoint"  # a name that could escape the cache dir or is empty: the content decides the format
    # the digest keeps two URLs with the same file name apart
    key = PurePosixPath("urls", hashlib.sha256(url.encode()).hexdigest()[:16], short_name(name))
    prefix = hash_prefix(name) if check_hash else ""
    return RemoteSource(url=url, cache_key=key, sha256=sha256, hash_prefix=prefix, name=name)


def location_source(location: str, *, sha256: str = "") -> Source:
    """A path, or a URL when it has a scheme (checkpoint_path= and cfg.file accept both)."""
    if "://" in location:
        return url_source(location, sha256=sha256)
    return LocalSource(path=expand_user(location, "checkpoint path"), sha256=sha256)


def resolve_sources(cfg: DefaultCfg, *, checkpoint_path: str | None) -> tuple[Source, ...]:
    """Candidate sources in order: checkpoint_path, else cfg.file, else the hub repo, then cfg.url."""
    if checkpoint_path is not None:
        if not checkpoint_path.strip():
            raise InvalidValueError(
                f"checkpoint_path={checkpoint_path!r} is invalid: expected the path of a checkpoint file, or a URL"
            )
        return (location_source(checkpoint_path),)
    if cfg.file:
        # the name rule (check_hash) is for published urls only: a file of one's own may be named anything
        return (location_source(cfg.file, sha256=cfg.sha256),)
    # cfg.sha256 describes the file the cfg publishes; whichever remote candidate serves it must match
    sources: list[Source] = []
    if cfg.hf_hub_id:
        sources.append(hub_source(cfg.hf_hub_id, sha256=cfg.sha256))
    if cfg.url:
        sources.append(url_source(cfg.url, sha256=cfg.sha256, check_hash=cfg.check_hash))
    if not sources:
        tag = f" (tag {cfg.tag!r})" if cfg.tag else ""
        raise WeightsUnavailableError(
            f"this model's cfg{tag} names no weights (no url, hf_hub_id or file); "
            "pass checkpoint_path=..., or pretrained_cfg_overlay={'file': ...} or {'url': ...}"
        )
    return tuple(sources)
