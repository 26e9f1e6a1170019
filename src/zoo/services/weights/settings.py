"""Where weights are cached and fetched from: explicit values, else the ZOO_* and HF_* environment variables."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import attrs

from zoo.domain.errors import InvalidValueError

CACHE_DIR_ENV = "ZOO_CACHE_DIR"
OFFLINE_ENV = "ZOO_OFFLINE"
# huggingface_hub's own variables, read here at each call (it reads them once, at import)
HUB_ENDPOINT_ENV = "HF_ENDPOINT"
HUB_OFFLINE_ENV = "HF_HUB_OFFLINE"
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


def _hf_path(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def default_hub_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The Hugging Face hub cache, resolved as huggingface_hub does: HF_HUB_CACHE, else HF_HOME/hub, else XDG."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(name):
            return _hf_path(environ[name])
    if environ.get("HF_HOME"):
        return _hf_path(environ["HF_HOME"]) / "hub"
    xdg = environ.get("XDG_CACHE_HOME")
    return (_hf_path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


TOKEN_ENVS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def hub_token_env(environ: Mapping[str, str] = os.environ) -> str:
    """The variable the hub token comes from: HF_TOKEN, else the older HUGGING_FACE_HUB_TOKEN ('' if neither)."""
    return next((name for name in TOKEN_ENVS if environ.get(name)), "")


def hub_token(environ: Mapping[str, str] = os.environ) -> str | None:
    """HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN); None lets huggingface_hub use the token file."""
    name = hub_token_env(environ)
    token = environ[name].strip() if name else ""
    return token or None


def check_token(token: str, variable: str) -> str:
    """The token, if it can go in an HTTP header; else InvalidValueError naming the variable (never the secret)."""
    bad = next((i for i, c in enumerate(token) if not (c.isascii() and c.isprintable()) or c.isspace()), None)
    if bad is not None:
        char = token[bad]
        what = "a line break (CR/LF)" if char in "\r\n" else f"the character {char.encode('unicode_escape').decode()!r}"
        raise InvalidValueError(
            f"{variable or 'the hub token'} is invalid: it holds {what} at position {bad}; expected the token alone, "
            "one line of printable ASCII without spaces (hf_...). Set it to the token only"
        )
    return token


def _hf_flag(value: str) -> bool:
    # huggingface_hub's reading of its flags: anything else is false, never an error
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def check_url(url: str, what: str) -> str:
    """The url, if its scheme is one zoo can fetch; else InvalidValueError naming the valid schemes."""
    expected = f"expected a URL with scheme {', '.join(URL_SCHEMES)}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # parsed on access: a port out of range or not a number raises here
    except ValueError as e:  # an unclosed [IPv6 host, a bad port
        raise InvalidValueError(f"{what}={url!r} is invalid: {e}; {expected}") from None
    if parts.scheme not in URL_SCHEMES or (parts.scheme != "file" and not parts.netloc):
        raise InvalidValueError(f"{what}={url!r} is invalid: {expected}")
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
    """zoo's cache for URL sources, the Hugging Face hub's endpoint, cache and token, and offline modes.

    offline (ZOO_OFFLINE) covers every remote source; hub_offline (offline, or HF_HUB_OFFLINE) the hub.
    """

    cache_dir: Path
    hub_endpoint: str = DEFAULT_HUB_ENDPOINT
    hub_cache_dir: Path = attrs.field(factory=default_hub_cache_dir)
    offline: bool = False
    hub_offline: bool = False
    hub_token: str | None = attrs.field(default=None, repr=False)
    hub_token_env: str = "HF_TOKEN"  # the variable hub_token came from, for messages

    @property
    def hub_offline_env(self) -> str:
        """The variable that put the hub offline ('' when online), for messages."""
        return OFFLINE_ENV if self.offline else HUB_OFFLINE_ENV if self.hub_offline else ""

    @classmethod
    def resolve(
        cls,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        hub_endpoint: str | None = None,
        hub_cache_dir: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> WeightSettings:
        """Explicit values win; unset ones come from ZOO_CACHE_DIR, ZOO_OFFLINE, HF_ENDPOINT, HF_HUB_CACHE
        (or HF_HOME), HF_HUB_OFFLINE and HF_TOKEN, read now."""
        if cache_dir is None:
            env_dir = environ.get(CACHE_DIR_ENV, "")
            cache_dir = Path(env_dir).expanduser() if env_dir else default_cache_dir(environ)
        endpoint = hub_endpoint if hub_endpoint is not None else environ.get(HUB_ENDPOINT_ENV, "")
        endpoint = check_url(endpoint or DEFAULT_HUB_ENDPOINT, HUB_ENDPOINT_ENV).rstrip("/")
        if offline is None:
            offline = parse_flag(OFFLINE_ENV, environ.get(OFFLINE_ENV, ""))
        hub_offline = offline or _hf_flag(environ.get(HUB_OFFLINE_ENV) or environ.get("TRANSFORMERS_OFFLINE") or "")
        return cls(
            cache_dir=Path(cache_dir),
            hub_endpoint=endpoint,
            hub_cache_dir=Path(hub_cache_dir).expanduser()
            if hub_cache_dir is not None
            else default_hub_cache_dir(environ),
            offline=offline,
            hub_offline=hub_offline,
            hub_token=hub_token(environ),
            hub_token_env=hub_token_env(environ) or "HF_TOKEN",
        )
