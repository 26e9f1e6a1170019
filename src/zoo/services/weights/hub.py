"""Hub files through huggingface_hub: its shared cache, endpoint, offline mode and tokens, with typed errors.

huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE once, when it is imported; zoo
reads them at each call (see settings.py) and passes endpoint, cache_dir, local_files_only and token
explicitly, so a change of environment after import still takes effect.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import attrs

from zoo.domain.errors import (
    DownloadError,
    HubAccessError,
    HubFileNotFoundError,
    HubRepoNotFoundError,
    InvalidValueError,
    WeightsError,
    WeightsUnavailableError,
    ZooError,
)
from zoo.services.weights.settings import check_token

# Tried in this order for a hub id: safetensors reads without unpickling and maps without copying.
HUB_FILENAMES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


@attrs.frozen(kw_only=True)
class HubSource:
    """Files of a hub repo (first one present wins), kept in the Hugging Face cache."""

    repo_id: str
    revision: str = "main"
    filenames: tuple[str, ...] = HUB_FILENAMES
    sha256: str = ""

    def describe(self, filename: str | None = None) -> str:
        """'org/name[@rev]' or 'org/name[@rev]/file', for messages."""
        at = "" if self.revision == "main" else f"@{self.revision}"
        return f"{self.repo_id}{at}" + (f"/{filename}" if filename else "")


def parse_hub_id(hub_id: str, *, what: str = "hf_hub_id") -> tuple[str, str]:
    """'org/name' or 'org/name@revision' -> (repo_id, revision); anything else is InvalidValueError."""
    repo_id, at, revision = hub_id.partition("@")
    ok = bool(_REPO_RE.match(repo_id)) and ".." not in repo_id
    ok = ok and (not at or (bool(_REVISION_RE.match(revision)) and ".." not in revision))
    if not ok:
        raise InvalidValueError(
            f"{what}={hub_id!r} is invalid: expected 'org/name' or 'org/name@revision' (letters, digits, '.', '_', '-')"
        )
    return repo_id, revision or "main"


def hub_source(hub_id: str, *, sha256: str = "", filenames: tuple[str, ...] = HUB_FILENAMES) -> HubSource:
    """The HubSource for a cfg's hf_hub_id."""
    repo_id, revision = parse_hub_id(hub_id)
    return HubSource(repo_id=repo_id, revision=revision, filenames=filenames, sha256=sha256)


@attrs.frozen(kw_only=True)
class HubClient:
    """One call's view of the hub: endpoint, cache, offline flag and token, passed explicitly to every request."""

    endpoint: str
    cache_dir: Path
    offline: bool
    offline_env: str = ""  # the variable that made it offline, for messages
    token: str | None = attrs.field(default=None, repr=False)
    token_env: str = "HF_TOKEN"  # the variable the token came from, for messages
    timeout: float = 60.0

    def cached(self, source: HubSource, filename: str) -> Path | None:
        """The file's path in the Hugging Face cache for source.revision, or None; never touches the network."""
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            source.repo_id, filename, cache_dir=self.cache_dir, revision=source.revision, repo_type="model"
        )
        return Path(found) if isinstance(found, str) else None

    def download(self, source: HubSource, filename: str, *, progress: bool) -> Path:
        """The file from the cache, else from the endpoint into the cache; failures are typed WeightsErrors."""
        from huggingface_hub import hf_hub_download

        if self.offline:
            raise WeightsUnavailableError(
                f"{self.offline_env}=1 and hub file {source.describe(filename)} is not in the Hugging Face cache "
                f"{self.cache_dir}; fetch it while online (zoo fetch NAME.TAG), or unset {self.offline_env}"
            )
        if self.token is not None:  # checked here, not when settings are read: only requests to the hub send it
            check_token(self.token, self.token_env)
        try:
            path = hf_hub_download(
                source.repo_id,
                filename,
                revision=source.revision,
                repo_type="model",
                cache_dir=self.cache_dir,
                endpoint=self.endpoint,
                token=self.token,
                local_files_only=False,
                etag_timeout=self.timeout,
                library_name="zoo",
                tqdm_class=None if progress else _silent_bar(),
            )
        except Exception as e:
            raise self.error(e, source, filename) from None
        return Path(str(path))

    def error(self, e: Exception, source: HubSource, filename: str) -> ZooError:
        """A huggingface_hub failure as the WeightsError that says what to do; unknown kinds re-raise."""
        from huggingface_hub import errors as hf

        where = f"hub file {source.describe(filename)} at {self.endpoint}"
        code = _status(e)
        token_hint = "set HF_TOKEN (or run `hf auth login`) to a token of an account with access"
        if isinstance(e, hf.GatedRepoError):
            return HubAccessError(
                f"{where}: repo {source.repo_id!r} is gated (HTTP {code}); accept its terms on the repo's page, "
                f"then {token_hint}"
            )
        if isinstance(e, hf.RepositoryNotFoundError):
            return HubRepoNotFoundError(
                f"{where}: repo {source.repo_id!r} not found (HTTP {code}); check the id, and if the repo is "
                f"private, {token_hint}"
            )
        if isinstance(e, hf.RevisionNotFoundError):
            return HubRepoNotFoundError(f"{where}: repo {source.repo_id!r} has no revision {source.revision!r}")
        if isinstance(e, hf.RemoteEntryNotFoundError):
            return HubFileNotFoundError(f"{where}: repo {source.repo_id!r} has no file {filename!r} (HTTP {code})")
        if isinstance(e, hf.HfHubHTTPError) and code in (401, 403):
            return HubAccessError(
                f"{where}: access to repo {source.repo_id!r} was refused (HTTP {code}: the token was rejected or "
                f"lacks access); check HF_TOKEN or the token saved by `hf auth login`"
            )
        if isinstance(e, hf.OfflineModeIsEnabled) or isinstance(e.__cause__, hf.OfflineModeIsEnabled):
            return WeightsUnavailableError(
                f"{where}: huggingface_hub is in offline mode (HF_HUB_OFFLINE was set when it was imported) "
                f"and the file is not in the Hugging Face cache {self.cache_dir}"
            )
        if isinstance(e, hf.LocalEntryNotFoundError) and isinstance(e.__cause__, hf.FileMetadataError):
            return WeightsUnavailableError(
                f"{where}: the answer lacks the hub's headers (X-Repo-Commit, ETag): is HF_ENDPOINT a hub?"
            )
        cause = e.__cause__
        if isinstance(e, hf.LocalEntryNotFoundError) and isinstance(cause, hf.HfHubHTTPError):
            # the hub answered, with an error huggingface_hub reports as "cannot find the file": say what it said
            status = _status(cause)
            retry = isinstance(status, int) and (status >= 500 or status in (408, 429))
            advice = "the server is failing or busy; try again later" if retry else "check HF_ENDPOINT"
            return WeightsUnavailableError(
                f"{where}: the hub answered HTTP {status} ({_reason(cause)}), and the file is not in the Hugging Face "
                f"cache {self.cache_dir}; {advice}"
            )
        if isinstance(e, hf.LocalEntryNotFoundError):
            return WeightsUnavailableError(
                f"{where}: cannot reach the hub, and the file is not in the Hugging Face cache {self.cache_dir} "
                f"(check the connection, or HF_ENDPOINT)"
            )
        if isinstance(e, hf.HfHubHTTPError):
            return WeightsUnavailableError(f"{where}: HTTP {code}")
        if isinstance(e, (hf.HFValidationError, ValueError)):
            return InvalidValueError(f"{where}: {e}")
        if type(e).__module__.split(".")[0].startswith(("httpx", "httpcore")):
            # huggingface_hub's HTTP client (httpx, httpx2 by version): the connection broke off after its retries
            return DownloadError(f"{where}: the download failed ({type(e).__name__}: {e}); try again")
        if isinstance(e, OSError):
            return WeightsError(
                f"{where}: cannot use the Hugging Face cache {self.cache_dir} ({e}); set HF_HUB_CACHE (or HF_HOME) "
                "to a writable directory with room for the file"
            )
        raise e


def _status(e: Exception) -> int | str:
    response = getattr(e, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else "?"


def _reason(e: Exception) -> str:
    response = getattr(e, "response", None)
    phrase = getattr(response, "reason_phrase", None)
    return phrase if isinstance(phrase, str) and phrase else "no reason given"


@functools.cache
def _silent_bar() -> type[Any]:
    """A tqdm class that never draws (huggingface_hub takes a class, not a flag)."""
    from tqdm.auto import tqdm

    class SilentBar(tqdm):  # type: ignore[type-arg]  # tqdm is generic in its iterable; bars here iterate nothing
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentBar
