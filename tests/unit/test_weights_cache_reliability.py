"""The loader and its cache under failure: verified hits, resource errors, name rules, source order, messages."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
import torch

import zoo.services.weights.cache as cache_module
from weights_support import CheckpointServer, assert_same, cache_files, safetensors_bytes, small_state_dict, torch_bytes
from zoo.api import builtin_registry
from zoo.domain.errors import (
    ChecksumMismatchError,
    DownloadError,
    InvalidValueError,
    WeightsError,
    WeightsUnavailableError,
)
from zoo.domain.values import DefaultCfg
from zoo.services.weights import CachedWeightLoader, CheckpointResourceError


def load(cfg: DefaultCfg, checkpoint_path: str | None = None, *, timeout: float = 60.0) -> dict[str, torch.Tensor]:
    return CachedWeightLoader(progress=False, timeout=timeout).load_state_dict(cfg, checkpoint_path=checkpoint_path)


def leftovers(root: Path) -> list[str]:
    """Everything under the cache's per-file folders and its locks: what a failed download must not leave."""
    found: list[str] = []
    for top in ("urls", "hub", ".locks"):
        if (root / top).is_dir():
            found.extend(p.relative_to(root).as_posix() for p in (root / top).rglob("*"))
    return sorted(found)


# -- a cache hit is verified like a download ---------------------------------------------------


def test_cache_hit_is_checked_against_the_cfg_sha256(server: CheckpointServer, cache_dir: Path) -> None:
    body = safetensors_bytes(small_state_dict())
    url = server.add("/w/model.safetensors", body)
    load(DefaultCfg(url=url))  # cached under a cfg that names no digest
    with pytest.raises(ChecksumMismatchError, match=r"expected 0{64} \(DefaultCfg\.sha256\)"):
        load(DefaultCfg(url=url, sha256="0" * 64))
    assert server.count("/w/model.safetensors") == 1  # refused from the cache, not re-downloaded
    good = hashlib.sha256(body).hexdigest()
    assert_same(load(DefaultCfg(url=url, sha256=good)), small_state_dict())


def test_verified_digest_is_remembered_until_the_file_changes(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = safetensors_bytes(small_state_dict(1))
    cfg = DefaultCfg(url=server.add("/w/model.safetensors", body), sha256=hashlib.sha256(body).hexdigest())
    load(cfg)
    hashed: list[Path] = []
    real = cache_module.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(cache_module, "file_sha256", counting)
    assert_same(load(cfg), small_state_dict(1))
    assert hashed == []  # the digest recorded at download time served the hit
    (entry,) = cache_files(cache_dir)
    other = safetensors_bytes(small_state_dict(2))
    assert len(other) == len(body)  # same size: only the content and mtime tell them apart
    entry.write_bytes(other)
    stat = entry.stat()
    os.utime(entry, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(ChecksumMismatchError, match=r"DefaultCfg\.sha256"):
        load(cfg)
    assert hashed == [entry]
    assert server.count("/w/model.safetensors") == 1


# -- resource errors keep the file -------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOMEM, errno.EMFILE, errno.EACCES])
@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_resource_error_reading_a_cached_file_keeps_it(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, code: int, fmt: str
) -> None:
    sd = small_state_dict()
    if fmt == "safetensors":
        url = server.add("/w/model.safetensors", safetensors_bytes(sd))
    else:
        url = server.add("/w/model.pth", torch_bytes(sd))
    load(DefaultCfg(url=url))
    (entry,) = cache_files(cache_dir)

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    with monkeypatch.context() as m:
        if fmt == "safetensors":
            import safetensors

            m.setattr(safetensors, "safe_open", failing)
        else:
            m.setattr(torch, "load", failing)
        with pytest.raises(CheckpointResourceError, match=rf"{os.strerror(code)}.*kept") as e:
            load(DefaultCfg(url=url))
    assert isinstance(e.value, WeightsError)
    assert "damaged" not in str(e.value)
    assert cache_files(cache_dir) == [entry]
    assert_same(load(DefaultCfg(url=url)), sd)
    assert server.total() == 1


def test_resource_error_while_verifying_a_hit_keeps_the_file(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = safetensors_bytes(small_state_dict())
    cfg = DefaultCfg(url=server.add("/w/model.safetensors", body), sha256=hashlib.sha256(body).hexdigest())
    load(cfg)
    (entry,) = cache_files(cache_dir)
    os.utime(entry, ns=(entry.stat().st_atime_ns, entry.stat().st_mtime_ns + 10**9))  # the hit must hash again

    def failing(path: Path) -> str:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    with monkeypatch.context() as m:
        m.setattr(cache_module, "file_sha256", failing)
        with pytest.raises(CheckpointResourceError, match="kept"):
            load(cfg)
    assert cache_files(cache_dir) == [entry]
    assert_same(load(cfg), small_state_dict())
    assert server.total() == 1


def test_resource_error_reading_a_fresh_download_keeps_it(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors

    url = server.add("/w/model.safetensors", safetensors_bytes(small_state_dict()))

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

    with monkeypatch.context() as m:
        m.setattr(safetensors, "safe_open", failing)
        with pytest.raises(CheckpointResourceError, match="kept"):
            load(DefaultCfg(url=url))
    assert len(cache_files(cache_dir)) == 1  # verified bytes, committed although they could not be read
    assert_same(load(DefaultCfg(url=url)), small_state_dict())
    assert server.total() == 1


# -- the file-name hash rule applies only where the cfg says so ---------------------------------


def test_dated_file_name_is_not_a_checksum(server: CheckpointServer, cache_dir: Path) -> None:
    sd = small_state_dict()
    url = server.add("/release/model-20240101.safetensors", safetensors_bytes(sd))
    assert_same(load(DefaultCfg(url=url)), sd)
    with pytest.raises(ChecksumMismatchError, match=r"check_hash=True.*'model-20240101\.safetensors'"):
        load(DefaultCfg(url=server.add("/other/model-20240101.safetensors", safetensors_bytes(sd)), check_hash=True))


def test_checkpoint_path_urls_never_apply_the_name_rule(server: CheckpointServer, cache_dir: Path) -> None:
    sd = small_state_dict()
    url = server.add("/mine/net-deadbeef.pth", torch_bytes(sd))
    assert_same(load(DefaultCfg(check_hash=True), checkpoint_path=url), sd)
    assert_same(load(DefaultCfg(file=url, check_hash=True)), sd)


def test_check_hash_must_be_a_bool() -> None:
    with pytest.raises(InvalidValueError, match=r"DefaultCfg\.check_hash=1 is invalid"):
        DefaultCfg(check_hash=1)  # type: ignore[arg-type]  # the wrong type is the point


def test_published_torch_hub_urls_carry_check_hash() -> None:
    cfgs = [c for name in ("resnet18", "resnet50") for c in builtin_registry().get_spec(name).default_cfgs]
    with_url = [c for c in cfgs if c.url]
    assert with_url
    assert all(c.check_hash for c in with_url)
    assert builtin_registry().get_spec("resnet18").default_cfg.url.endswith("-d63eafa0.pth")
    assert all(not c.check_hash for c in cfgs if not c.url)


# -- the cache is consulted for every source first ----------------------------------------------


def test_cached_later_source_is_used_without_trying_earlier_ones(server: CheckpointServer, cache_dir: Path) -> None:
    sd = small_state_dict()
    url = server.add("/release/net.safetensors", safetensors_bytes(sd))
    load(DefaultCfg(url=url))
    before = server.total()
    # the hub candidates come first and are not cached; asking them would cost a round trip (or a hang)
    assert_same(load(DefaultCfg(hf_hub_id="org/not-cached", url=url)), sd)
    assert server.total() == before


# -- messages that say what happened ------------------------------------------------------------


def test_empty_or_directory_checkpoint_path_says_so(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(InvalidValueError, match="checkpoint_path='' is invalid") as e:
        load(DefaultCfg(), checkpoint_path="")
    assert "does not exist" not in str(e.value)
    with pytest.raises(WeightsError, match="is a directory") as d:
        load(DefaultCfg(), checkpoint_path=str(tmp_path))
    assert "does not exist" not in str(d.value)


@pytest.mark.parametrize("mode", ["stall", "stall-chunked"])
def test_stalled_download_counts_the_bytes_that_arrived(server: CheckpointServer, cache_dir: Path, mode: str) -> None:
    body = safetensors_bytes({"t": torch.zeros(64, 64)})
    url = server.add("/slow/model.safetensors", body, mode="stall" if mode == "stall" else "stall-chunked")
    with pytest.raises(DownloadError, match=rf"after {len(body) // 2} (of {len(body)} )?bytes"):
        load(DefaultCfg(url=url), timeout=0.5)
    assert leftovers(cache_dir) == []


def test_overlong_url_file_name_gets_a_short_cache_name(server: CheckpointServer, cache_dir: Path) -> None:
    sd = small_state_dict()
    name = "w" * 300 + ".safetensors"
    url = server.add(f"/long/{name}", safetensors_bytes(sd))
    assert_same(load(DefaultCfg(url=url)), sd)
    (entry,) = cache_files(cache_dir)
    assert len(entry.name.encode()) < 128
    assert entry.name.endswith(".safetensors")
    assert_same(load(DefaultCfg(url=url)), sd)
    assert server.count(f"/long/{name}") == 1
    # two long names that share their first characters stay apart
    url2 = server.add(f"/long/{'w' * 300}x.safetensors", safetensors_bytes(small_state_dict(5)))
    assert_same(load(DefaultCfg(url=url2)), small_state_dict(5))


@pytest.mark.parametrize("mode", ["missing", "truncate"])
def test_failed_download_leaves_no_folder_or_lock(server: CheckpointServer, cache_dir: Path, mode: str) -> None:
    if mode == "missing":
        url = server.base + "/absent.safetensors"
        with pytest.raises(WeightsUnavailableError):
            load(DefaultCfg(url=url, hf_hub_id="org/absent"))
    else:
        url = server.add("/w/model.safetensors", safetensors_bytes(small_state_dict()), mode="truncate")
        with pytest.raises(DownloadError):
            load(DefaultCfg(url=url))
    assert leftovers(cache_dir) == []
