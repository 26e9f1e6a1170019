"""Test helpers for pretrained weights: a loopback checkpoint server, checkpoint bytes, a tiny model."""

from __future__ import annotations

import collections
import hashlib
import io
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Literal

import attrs
import pytest
import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from zoo.archs.base import ZooModule
from zoo.domain.values import DefaultCfg, FeatureInfo

Mode = Literal["ok", "truncate", "slow", "stall", "stall-chunked"]

STALL_S = 3.0  # how long a stalling route holds the connection open after its first half


@attrs.frozen
class Route:
    """What the server answers for one path."""

    body: bytes
    mode: Mode = "ok"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    counts: collections.Counter[str]
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.counts[self.path] += 1
        route = srv.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        if route.mode == "stall-chunked":
            self._stall_chunked(route.body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        if route.mode == "stall":
            # half the body, then silence with the connection open: the client's read times out
            self.wfile.write(route.body[: len(route.body) // 2])
            self.wfile.flush()
            time.sleep(STALL_S)
            self.close_connection = True
        elif route.mode == "truncate":
            # promise the whole body, send half, hang up
            self.wfile.write(route.body[: len(route.body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif route.mode == "slow":
            # long enough that concurrent fetchers overlap with the one downloading
            step = max(1, len(route.body) // 8)
            for i in range(0, len(route.body), step):
                self.wfile.write(route.body[i : i + step])
                self.wfile.flush()
                time.sleep(0.1)
        else:
            self.wfile.write(route.body)

    def _stall_chunked(self, body: bytes) -> None:
        # chunked transfer (no length announced): one chunk with half the body, then silence
        self.protocol_version = "HTTP/1.1"
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        half = body[: len(body) // 2]
        self.wfile.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
        self.wfile.flush()
        time.sleep(STALL_S)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


class CheckpointServer:
    """An HTTP server on 127.0.0.1 serving bytes by path and counting every request."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.routes = {}
        self._server.counts = collections.Counter()
        self._server.lock = threading.Lock()
        # a short poll interval keeps shutdown (once per test) from costing half a second
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> CheckpointServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base(self) -> str:
        """http://127.0.0.1:<port>"""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, path: str, body: bytes, mode: Mode = "ok") -> str:
        """Serve body at path; returns its URL."""
        self._server.routes[path] = Route(body, mode)
        return self.base + path

    def count(self, path: str) -> int:
        """How many GET requests path has had."""
        with self._server.lock:
            return self._server.counts[path]

    def total(self) -> int:
        """How many GET requests the server has had."""
        with self._server.lock:
            return sum(self._server.counts.values())


def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: CheckpointServer) -> Path:
    """An empty cache via ZOO_CACHE_DIR, the hub endpoint on the loopback server, online."""
    root = tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE_DIR", str(root))
    monkeypatch.setenv("ZOO_HUB_ENDPOINT", server.base)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    return root


def cache_files(root: Path) -> list[Path]:
    """Every file in the cache except the lock files and digest records (complete and partial downloads alike)."""
    if not root.exists():
        return []
    records = {".locks", ".digests"}
    return sorted(p for p in root.rglob("*") if p.is_file() and not records & set(p.relative_to(root).parts))


def safetensors_bytes(sd: Mapping[str, torch.Tensor]) -> bytes:
    """sd serialised as safetensors."""
    return save_safetensors({k: v.contiguous() for k, v in sd.items()})


def torch_bytes(obj: object) -> bytes:
    """obj serialised with torch.save (zip format)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def small_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A few named tensors; their values depend on the seed."""
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(8, 4, generator=g), "a.bias": torch.randn(8, generator=g), "n": torch.tensor(3)}


def assert_same(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    """Same keys, dtypes and values."""
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def digests(sd: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """sha256 of each tensor's bytes (through numpy: no torch kernels, so safe in a forked child)."""
    return {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in sd.items()}


def fetch_in_process(cache_root: str, url: str, barrier: Barrier, results: Queue[dict[str, str]]) -> None:
    """Child process body: wait for the others, load url through the cache, report tensor digests."""
    from zoo.services.weights import CachedWeightLoader

    barrier.wait()
    sd = CachedWeightLoader(cache_dir=cache_root, progress=False).load_state_dict(DefaultCfg(url=url))
    results.put(digests(sd))


TINY_CFG = DefaultCfg(num_classes=5, first_conv="conv1", classifier="fc", input_size=(3, 8, 8))


class TinyNet(ZooModule):
    """conv -> bn -> scale (a non-persistent buffer) -> pool -> fc: enough to test every adaptation."""

    def __init__(self, *, num_classes: int = 5, in_chans: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = 4
        self.conv1 = nn.Conv2d(in_chans, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        # computed, never saved: a meta-built model must still get these values
        self.register_buffer("scale", torch.arange(1.0, 5.0).view(1, 4, 1, 1), persistent=False)
        self.fc: nn.Module = nn.Linear(4, num_classes) if num_classes else nn.Identity()
        self.feature_info = [FeatureInfo(index=0, module="bn1", num_chs=4, reduction=1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn1(self.conv1(x)) * self.scale
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        if pre_logits:
            return x
        out: torch.Tensor = self.fc(x)
        return out

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(4, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc


def tiny_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """A trained-looking TinyNet state_dict (3 channels, 5 classes) with non-trivial values everywhere."""
    torch.manual_seed(seed)
    model = TinyNet()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in model.state_dict().items()}
