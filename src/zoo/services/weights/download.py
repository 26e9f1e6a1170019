"""Streaming a URL into an open file, with a progress bar, a length check and a sha256 check."""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.request
from typing import BinaryIO

from zoo.domain.errors import ChecksumMismatchError, DownloadError, WeightsUnavailableError
from zoo.services.weights.sources import RemoteSource

_CHUNK = 1 << 20
_USER_AGENT = "zoo/0.1"


def progress_default() -> bool:
    """Show a progress bar only when stderr is a terminal (not in logs, pipes or CI)."""
    return sys.stderr.isatty()


def download(source: RemoteSource, out: BinaryIO, *, progress: bool, timeout: float) -> str:
    """Write source.url into out, check its length and checksum, and return its sha256; any shortfall raises.

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
                    # read1 returns what has arrived: a read of a whole chunk that times out
                    # halfway would drop (and not count) the bytes it had
                    chunk = response.read1(_CHUNK)
                except (http.client.HTTPException, OSError) as e:
                    of = f" of {expected}" if expected is not None else ""
                    raise DownloadError(
                        f"{source.url}: the download broke off after {received}{of} bytes "
                        f"({type(e).__name__}: {e or 'timed out'}); try again"
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
    sha256 = digest.hexdigest()
    verify_checksum(source, sha256, outcome="the download was discarded")
    return sha256


def verify_checksum(source: RemoteSource, sha256: str, *, outcome: str) -> None:
    """Compare a file's sha256 with the cfg's digest and, under check_hash, the file name's hash prefix.

    outcome says what became of the file, for the message.
    """
    if source.sha256 and sha256 != source.sha256:
        raise ChecksumMismatchError(
            f"{source.url}: sha256 is {sha256}, expected {source.sha256} (DefaultCfg.sha256); {outcome}"
        )
    if source.hash_prefix and not sha256.startswith(source.hash_prefix):
        raise ChecksumMismatchError(
            f"{source.url}: sha256 is {sha256}, expected it to start with {source.hash_prefix} by the torch.hub "
            f"file-name rule (DefaultCfg.check_hash=True: {source.name!r} ends in -<sha256 prefix>); {outcome}. "
            "If that suffix is not a hash, pass pretrained_cfg_overlay={'check_hash': False}"
        )
