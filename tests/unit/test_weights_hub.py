"""Hub weights through huggingface_hub against a loopback hub: its cache, offline modes, tokens and typed errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from weights_support import (
    CheckpointServer,
    assert_same,
    cache_files,
    hub_cache_of,
    safetensors_bytes,
    small_state_dict,
    torch_bytes,
)
from zoo.domain.errors import (
    ChecksumMismatchError,
    DownloadError,
    HubAccessError,
    HubFileNotFoundError,
    HubRepoNotFoundError,
    WeightsUnavailableError,
)
from zoo.domain.values import DefaultCfg
from zoo.services.weights import CachedWeightLoader


def load(cfg: DefaultCfg) -> dict[str, torch.Tensor]:
    return CachedWeightLoader(progress=False).load_state_dict(cfg)


def write_hub_cache(root: Path, repo_id: str, files: dict[str, bytes], commit: str = "c" * 40) -> Path:
    """A Hugging Face cache entry as huggingface_hub lays it out: blobs, snapshots/<commit>/<file>, refs/main."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    for name, body in files.items():
        blob = repo / "blobs" / hashlib.sha256(body).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(body)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


@pytest.mark.parametrize("offline_env", ["HF_HUB_OFFLINE", "ZOO_OFFLINE", None])
def test_hub_cache_layout_loads_with_zero_requests(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, offline_env: str | None
) -> None:
    sd = small_state_dict(4)
    snapshot = write_hub_cache(hub_cache_of(cache_dir), "org/cached", {"model.safetensors": safetensors_bytes(sd)})
    if offline_env is not None:
        monkeypatch.setenv(offline_env, "1")  # set after huggingface_hub was imported: still honoured
    assert_same(load(DefaultCfg(hf_hub_id="org/cached", url=server.base + "/never.pth")), sd)
    path = CachedWeightLoader(progress=False).fetch(DefaultCfg(hf_hub_id="org/cached"))
    assert path == snapshot / "model.safetensors"
    assert server.total() == 0
    assert cache_files(cache_dir) == []


def test_file_another_library_downloaded_is_used_without_a_download(server: CheckpointServer, cache_dir: Path) -> None:
    from huggingface_hub import hf_hub_download

    sd = small_state_dict(5)
    server.add_repo("org/shared", {"pytorch_model.bin": torch_bytes(sd)})
    hf_hub_download("org/shared", "pytorch_model.bin", cache_dir=hub_cache_of(cache_dir), endpoint=server.base)
    before = server.total()
    assert_same(load(DefaultCfg(hf_hub_id="org/shared")), sd)
    assert server.total() == before


@pytest.mark.parametrize("offline_env", ["HF_HUB_OFFLINE", "ZOO_OFFLINE"])
def test_offline_and_not_cached_names_the_repo(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, offline_env: str
) -> None:
    server.add_repo("org/remote", {"model.safetensors": safetensors_bytes(small_state_dict())})
    monkeypatch.setenv(offline_env, "1")
    with pytest.raises(WeightsUnavailableError, match=rf"{offline_env}=1 .*org/remote") as e:
        load(DefaultCfg(hf_hub_id="org/remote"))
    assert str(hub_cache_of(cache_dir)) in str(e.value)
    assert server.total() == 0


def test_environment_changes_after_import_take_effect(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a, b = small_state_dict(1), small_state_dict(2)
    server.add_repo("org/net", {"model.safetensors": safetensors_bytes(a)})
    with CheckpointServer() as other:
        other.add_repo("org/net", {"model.safetensors": safetensors_bytes(b)})
        assert_same(load(DefaultCfg(hf_hub_id="org/net")), a)
        # a new endpoint and a new cache: the second server answers, into the second cache
        monkeypatch.setenv("HF_ENDPOINT", other.base)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "second"))
        assert_same(load(DefaultCfg(hf_hub_id="org/net")), b)
        assert other.total() > 0
        assert (tmp_path / "second" / "models--org--net").is_dir()
        # HF_HOME stands in for an unset HF_HUB_CACHE, as huggingface_hub has it
        monkeypatch.delenv("HF_HUB_CACHE")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
        CachedWeightLoader(progress=False).fetch(DefaultCfg(hf_hub_id="org/net"))
        assert (tmp_path / "home" / "hub" / "models--org--net").is_dir()


def test_token_from_hf_token_reaches_the_hub_but_not_the_storage_host(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd = small_state_dict(6)
    server.add_repo("org/private", {"model.safetensors": safetensors_bytes(sd)}, token="hf_right")
    with pytest.raises(HubRepoNotFoundError, match=r"repo 'org/private' not found \(HTTP 401\).*HF_TOKEN"):
        load(DefaultCfg(hf_hub_id="org/private"))
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubAccessError, match=r"org/private/model\.safetensors .*refused \(HTTP 401"):
        load(DefaultCfg(hf_hub_id="org/private"))
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    assert_same(load(DefaultCfg(hf_hub_id="org/private")), sd)
    last_two = server.requests()[-2:]
    assert [(r.method, r.server, r.authorization) for r in last_two] == [
        ("HEAD", "main", "Bearer hf_right"),
        ("GET", "cdn", None),  # the redirect leaves the hub: the token must not follow it
    ]


def test_gated_and_missing_repos_and_files_are_typed(server: CheckpointServer, cache_dir: Path) -> None:
    server.add_repo("org/gated", {"model.safetensors": b"x"}, gated=True)
    with pytest.raises(HubAccessError, match=r"repo 'org/gated' is gated \(HTTP 403\).*HF_TOKEN"):
        load(DefaultCfg(hf_hub_id="org/gated"))
    with pytest.raises(HubRepoNotFoundError, match=r"repo 'org/absent' not found \(HTTP 404\)"):
        load(DefaultCfg(hf_hub_id="org/absent"))
    server.add_repo("org/empty", {"README.md": b"# nothing here"})
    with pytest.raises(HubFileNotFoundError, match=r"org/empty at .* has none of model\.safetensors, pytorch_model"):
        load(DefaultCfg(hf_hub_id="org/empty"))
    with pytest.raises(HubRepoNotFoundError, match=r"'org/empty' has no revision 'v9'"):
        load(DefaultCfg(hf_hub_id="org/empty@v9"))
    # a repo failure leaves the next source to serve, and the message keeps what the hub said
    url = server.add("/release/net.pth", torch_bytes(small_state_dict()))
    assert_same(load(DefaultCfg(hf_hub_id="org/gated", url=url)), small_state_dict())


def test_revision_and_sha256_of_hub_files(server: CheckpointServer, cache_dir: Path) -> None:
    body = safetensors_bytes(small_state_dict(7))
    repo = server.add_repo("org/pinned", {"model.safetensors": body})
    with pytest.raises(ChecksumMismatchError, match=r"org/pinned@.*model\.safetensors.*expected " + "0" * 64) as e:
        load(DefaultCfg(hf_hub_id=f"org/pinned@{repo.commit}", sha256="0" * 64))
    assert "left in the Hugging Face cache" in str(e.value)
    good = hashlib.sha256(body).hexdigest()
    requests = server.total()
    assert_same(load(DefaultCfg(hf_hub_id=f"org/pinned@{repo.commit}", sha256=good)), small_state_dict(7))
    assert server.total() == requests  # pinned to a commit that is cached: no request


def test_broken_download_is_a_typed_error(server: CheckpointServer, cache_dir: Path) -> None:
    body = safetensors_bytes({"t": torch.zeros(64, 64)})
    server.add_repo("org/flaky", {"model.safetensors": body})
    server.add(f"/blobs/{hashlib.sha256(body).hexdigest()}", body, mode="truncate")
    # huggingface_hub retries (with its own pauses: about 5 s here) before giving up
    with pytest.raises(DownloadError, match=r"org/flaky/model\.safetensors .*download failed"):
        load(DefaultCfg(hf_hub_id="org/flaky"))


def test_the_hub_trusts_no_loopback_origin(server: CheckpointServer, cache_dir: Path) -> None:
    # huggingface_hub follows a HEAD's redirect to an origin it trusts as the hub and reads the file's
    # metadata from the answer there; a loopback server trusted by an earlier import would take the storage
    # listener of a later test (on a reused port) for the hub, and its answer lacks the hub's headers
    from huggingface_hub.utils import _http

    assert server.base.startswith("http://127.0.0.1:")
    assert not [origin for origin in _http._HUB_ORIGINS if origin[1] == "127.0.0.1"]
