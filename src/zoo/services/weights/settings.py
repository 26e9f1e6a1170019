"""Where weights are cached and fetched from: explicit values, else the ZOO_* environment variables."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import attrs

from zoo.domain.errors import InvalidValueError

CACHE_DIR_ENV = "ZOO_CACHE_DIR"
HUB_ENDPOINT_ENV = "ZOO_HUB_ENDPOINT"
OFFLINE_ENV = "ZOO_OFFLINE"
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
URL_SCHEMES: tuple[str, ...] = ("http", "https", "file")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The user's cache directory for zoo (XDG on Linux, Library/Caches on macOS, LOCALAPPDATA on Windows)."""
    if sys.platform == "win32" and environ.get("LOCALAPPDATA"):
        return Path(environ["LOCALAPPDATA"]) / "zoo" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "zoo"
    xdg = environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "zoo"


def check_url(url: str, what: str) -> str:
    """The url, if its scheme is one zoo can fetch; else InvalidValueError naming the valid schemes."""
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES or (parts.scheme != "file" and not parts.netloc):
        raise InvalidValueError(f"{what}={url!r} is invalid: expected a URL with scheme {', '.join(URL_SCHEMES)}")
    return url


def parse_flag(name: str, value: str) -> bool:
    """An environment flag: 1/true/yes/on or 0/false/no/off/empty; anything else is refused."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InvalidValueError(f"{name}={value!r} is invalid: expected one of {', '.join(_TRUE + _FALSE[1:])}")


@attrs.frozen(kw_only=True)
class WeightSettings:
    """The cache directory, the hub endpoint and whether to stay offline."""

    cache_dir: Path
    hub_endpoint: str = DEFAULT_HUB_ENDPOINT
    offline: bool = False

    @classmethod
    def resolve(
        cls,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        hub_endpoint: str | None = None,
        offline: bool | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> WeightSettings:
        """Explicit values win; unset ones come from ZOO_CACHE_DIR, ZOO_HUB_ENDPOINT and ZOO_OFFLINE."""
        if cache_dir is None:
            env_dir = environ.get(CACHE_DIR_ENV, "")
            cache_dir = Path(env_dir).expanduser() if env_dir else default_cache_dir(environ)
        endpoint = hub_endpoint if hub_endpoint is not None else environ.get(HUB_ENDPOINT_ENV, "")
        endpoint = check_url(endpoint or DEFAULT_HUB_ENDPOINT, HUB_ENDPOINT_ENV).rstrip("/")
        if offline is None:
            offline = parse_flag(OFFLINE_ENV, environ.get(OFFLINE_ENV, ""))
        return cls(cache_dir=Path(cache_dir), hub_endpoint=endpoint, offline=offline)
