"""Weights storage under hostile settings: caches shared with the hub, stale digests, overlaid urls, bad variables."""

from __future__ import annotations

import hashlib
import os
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import zoo
from weights_support import (
    TINY_CFG,
    CheckpointServer,
    TinyNet,
    assert_same,
    cache_files,
    safetensors_bytes,
    small_state_dict,
    tiny_checkpoint,
)
from zoo.api import ModelZoo
from zoo.cli import main
from zoo.domain.errors import ChecksumMismatchError, InvalidValueError, WeightsUnavailableError
from zoo.domain.values import DefaultCfg, ModelSpec
from zoo.services.registry import Registry
from zoo.services.weights import CachedWeightLoader

# -- 1. zoo's cache commands touch only what zoo wrote --------------------------------------------


def tree(root: Path) -> dict[str, bytes | str]:
    """Every path under root: a file's bytes, a link's target, a folder as 'dir'."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = f"-> {p.readlink()}" if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


@pytest.mark.parametrize("shared", ["HF_HOME", "HF_HUB_CACHE", "HF_HUB_CACHE inside"])
def test_cache_list_and_clear_leave_the_hugging_face_cache_alone(
    server: CheckpointServer,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    shared: str,
) -> None:
    # ZOO_CACHE_DIR set to HF_HOME (whose hub/ is the Hugging Face cache), to the Hugging Face cache itself, or
    # to a folder holding it where zoo keeps its downloads (urls/)
    root = tmp_path / "shared"
    hub_cache = {"HF_HOME": root / "hub", "HF_HUB_CACHE": root, "HF_HUB_CACHE inside": root / "urls"}[shared]
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv(shared.split()[0], str(root if shared == "HF_HOME" else hub_cache))
    monkeypatch.setenv("ZOO_CACHE_DIR", str(root))
    repo = server.add_repo("org/net", {"model.safetensors": safetensors_bytes(small_state_dict(1))})
    from huggingface_hub import hf_hub_download

    hf_hub_download("org/net", "model.safetensors", cache_dir=hub_cache, endpoint=server.base)  # another library's
    (root / "urls").mkdir(exist_ok=True)
    (root / "urls" / "notes.txt").write_text("the user's")  # not a place zoo writes its files
    before = tree(root)
    assert any(".locks/" in p for p in before)  # the hub's own lock folder, which zoo's shares a name with
    assert any(p.endswith(f"snapshots/{repo.commit}/model.safetensors") for p in before)

    url = server.add("/w/net.safetensors", safetensors_bytes(small_state_dict(2)))
    CachedWeightLoader(progress=False).fetch(DefaultCfg(url=url))
    capsys.readouterr()
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "net.safetensors" in out
    assert "models--org--net" not in out
    assert "notes.txt" not in out
    assert f"1 file(s), 0.0 MiB, in {root}" in out

    assert main(["cache", "clear"]) == 0
    assert "removed 1 file(s)" in capsys.readouterr().out
    assert tree(root) == before  # zoo's download, lock and digest records gone; every other byte as it was


# -- 3. a verified cached file outlives a request with the wrong digest ------------------------------


def tiny_zoo(cfg: DefaultCfg) -> ModelZoo:
    reg = Registry()
    reg.register(ModelSpec(name="tiny_net", family="tests.tiny", constructor=TinyNet, default_cfgs=(cfg,)))
    return ModelZoo(registry=reg, weight_loader=CachedWeightLoader(progress=False))


def test_a_wrong_sha256_overlay_keeps_the_verified_cached_file(server: CheckpointServer, cache_dir: Path) -> None:
    body = safetensors_bytes(tiny_checkpoint())
    good = hashlib.sha256(body).hexdigest()
    app = tiny_zoo(TINY_CFG.evolve({"url": server.add("/pub/tiny.safetensors", body), "sha256": good}))
    app.create_model("tiny_net", pretrained=True)
    (cached,) = cache_files(cache_dir)
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as e:
        app.create_model("tiny_net", pretrained=True, pretrained_cfg_overlay={"sha256": wrong})
    message = str(e.value)
    assert good in message
    assert wrong in message
    assert "request's hash is the one that disagrees" in message
    assert "kept" in message
    assert cache_files(cache_dir) == [cached]
    assert cached.read_bytes() == body
    assert_same(app.create_model("tiny_net", pretrained=True).state_dict(), tiny_checkpoint())
    assert server.count("/pub/tiny.safetensors") == 1  # served from the cache every time after the first
    cached.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # bytes changed since they were verified: not kept
    stat = cached.stat()
    os.utime(cached, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a coarse clock could hide the write
    with pytest.raises(ChecksumMismatchError, match="the cached copy was removed"):
        app.create_model("tiny_net", pretrained=True)
    assert cache_files(cache_dir) == []


# -- 5. check_hash belongs to the url it was set for ---------------------------------------------


def test_an_overlaid_url_does_not_inherit_check_hash(server: CheckpointServer, cache_dir: Path) -> None:
    body = safetensors_bytes(tiny_checkpoint())
    prefix = hashlib.sha256(body).hexdigest()[:8]
    published = server.add(f"/pub/tiny-{prefix}.safetensors", body)
    app = tiny_zoo(TINY_CFG.evolve({"url": published, "check_hash": True}))
    mine = server.add("/mine/model-20240101.safetensors", body)  # a date, not a hash
    model = app.create_model("tiny_net", pretrained=True, pretrained_cfg_overlay={"url": mine})
    assert_same(model.state_dict(), tiny_checkpoint())
    assert model.default_cfg.check_hash is False
    with pytest.raises(ChecksumMismatchError, match=r"torch\.hub file-name rule"):  # set with the url: it applies
        app.create_model("tiny_net", pretrained=True, pretrained_cfg_overlay={"url": mine, "check_hash": True})


def test_check_hash_follows_the_url_in_evolve() -> None:
    cfg = DefaultCfg(url="https://example.com/net-0123abcd.pth", check_hash=True)
    assert cfg.evolve({"url": "https://example.com/model-20240101.pth"}).check_hash is False
    assert cfg.evolve({"url": cfg.url}).check_hash is True  # the same url keeps its flag
    assert cfg.evolve({"crop_pct": 0.9}).check_hash is True
    assert cfg.evolve({"url": "https://example.com/other-0123abcd.pth", "check_hash": True}).check_hash is True
    assert DefaultCfg().evolve({"check_hash": True, "url": "https://example.com/a-0123abcd.pth"}).check_hash


# -- 8, 9. hub settings and answers, named ------------------------------------------------------


def test_a_malformed_hf_endpoint_is_named(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://[::1")
    with pytest.raises(InvalidValueError, match=r"HF_ENDPOINT='http://\[::1' is invalid.*IPv6"):
        zoo.create_model("resnet18", pretrained=True)


class _Failing(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A hub endpoint answering HTTP 500 to everything; huggingface_hub's retries do not wait."""
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_a_hub_server_error_is_reported_as_its_status(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch, failing_hub: str
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", failing_hub)
    with pytest.raises(WeightsUnavailableError) as e:
        CachedWeightLoader(progress=False).load_state_dict(DefaultCfg(hf_hub_id="org/net"))
    assert "HTTP 500" in str(e.value)
    assert "check the connection" not in str(e.value)


def test_a_token_with_a_line_break_is_named(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add_repo("org/net", {"model.safetensors": safetensors_bytes(small_state_dict())})
    secret = "hf_secret\r\nX-Injected: 1"
    monkeypatch.setenv("HF_TOKEN", secret)
    with pytest.raises(InvalidValueError, match="HF_TOKEN is invalid: it holds a line break") as e:
        CachedWeightLoader(progress=False).load_state_dict(DefaultCfg(hf_hub_id="org/net"))
    assert "hf_secret" not in str(e.value)  # the token is a secret: named, never shown
    assert server.total() == 0
    monkeypatch.setenv("HF_TOKEN", "hf_secret\n")  # a trailing newline (echo > file) is trimmed, as before
    assert_same(CachedWeightLoader(progress=False).load_state_dict(DefaultCfg(hf_hub_id="org/net")), small_state_dict())
