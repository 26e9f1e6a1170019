"""Streaming a URL into an open file, with a progress bar, a length check and a sha256 check."""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from zoo.domain.errors import ChecksumMismatchError, DownloadError, WeightsUnavailableError
from zoo.services.weights.sources import RemoteSource

_CHUNK = 1 << 20
_USER_AGENT = "zoo/0.1"


def progress_default() -> bool:
    """Show a progress bar only when stderr is a terminal (not in logs, pipes or CI)."""
    return sys.stderr.isatty()


def download(source: RemoteSource, out: BinaryIO, *, progress: bool, timeout: float) -> None:
    """Write source.url into out, then check its length and checksum; any shortfall raises.

    WeightsUnavailableError: the URL could not be opened (HTTP error, refused, no such file) —
    another source may serve it. DownloadError: the body ended early. ChecksumMismatchError: the
    bytes are not the published ones.
    """
    request = urllib.request.Request(source.url, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise WeightsUnavailableError(f"{source.url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise WeightsUnavailableError(f"{source.url}: cannot connect or open ({reason})") from None
    digest = hashlib.sha256()
    received = 0
    with response:
        length_header = response.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        from tqdm import tqdm  # imported here: only downloads need it

        name = source.cache_key.name
        with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.HTTPException, OSError) as e:
                    raise DownloadError(
                        f"{source.url}: the download broke off after {received} bytes ({type(e).__name__}: {e})"
                    ) from None
                if not chunk:
                    break
                out.write(chunk)  # an OSError here is the cache's (disk full), reported by the loader
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received != expected:
        raise DownloadError(
            f"{source.url}: the server closed the connection after {received} of {expected} bytes; try again"
        )
    verify_checksum(source, digest.hexdigest())


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(source: RemoteSource, sha256: str) -> None:
    """Compare a file's sha256 with the cfg's digest and the file name's hash prefix."""
    if source.sha256 and sha256 != source.sha256:
        raise ChecksumMismatchError(
            f"{source.url}: sha256 is {sha256}, expected {source.sha256} (from the model's cfg); the file was discarded"
        )
    if source.hash_prefix and not sha256.startswith(source.hash_prefix):
        raise ChecksumMismatchError(
            f"{source.url}: sha256 is {sha256}, expected it to start with {source.hash_prefix} "
            f"(from the file name {source.cache_key.name!r}); the file was discarded"
        )
