"""Test helpers for pretrained weights: a loopback checkpoint and hub server, checkpoint bytes, a tiny model."""

from __future__ import annotations

import collections
import hashlib
import io
import re
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Literal

import attrs

# huggingface_hub fixes the origins it trusts as the hub (whose redirects it follows on a HEAD) at import,
# from HF_ENDPOINT as it is then. Imported here, with conftest, before any test points HF_ENDPOINT at a
# loopback server: imported later, the first test's server stays a trusted origin for the whole process,
# and a later test's storage listener that reuses its port has its redirect followed, losing the hub's
# headers (test_the_hub_trusts_no_loopback_origin).
import huggingface_hub.file_download  # noqa: F401  imported for that side effect alone
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


@attrs.define
class HubRepo:
    """A hub repo the server answers for: its files at one commit, and who may read them."""

    files: dict[str, bytes]
    commit: str
    token: str | None = None  # private: only `Authorization: Bearer <token>` may read it
    gated: bool = False  # gated: refused (403 GatedRepo) unless that token is sent


# Large binaries live in LFS on the hub: their resolve URL redirects to a storage host
LFS_SUFFIXES = (".safetensors", ".bin", ".pth")
_RESOLVE_RE = re.compile(r"^/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


@attrs.frozen
class Request:
    """One request the server answered."""

    method: str
    path: str
    authorization: str | None
    server: Literal["main", "cdn"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    hub: dict[str, HubRepo]
    counts: collections.Counter[str]
    log: list[Request]
    lock: threading.Lock
    role: Literal["main", "cdn"]
    cdn_base: str


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        srv = self.server
        with srv.lock:
            srv.counts[self.path] += 1
            srv.log.append(Request(self.command, self.path, self.headers.get("Authorization"), srv.role))
        route = srv.routes.get(self.path)
        if route is None and (m := _RESOLVE_RE.match(self.path)) is not None:
            self._resolve(m.group("repo"), m.group("rev"), m.group("file"), head=head)
            return
        if route is None:
            self.send_error(404)
            return
        if head:
            self.send_response(200)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
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

    def _resolve(self, repo_id: str, rev: str, filename: str, *, head: bool) -> None:
        """The hub's answer to HEAD/GET {repo}/resolve/{rev}/{file}, with the headers huggingface_hub reads."""
        repo = self.server.hub.get(repo_id)
        auth = self.headers.get("Authorization")
        if repo is None:
            self._hub_error(404, {"X-Error-Code": "RepoNotFound"})
            return
        allowed = repo.token is not None and auth == f"Bearer {repo.token}"
        if repo.gated and not allowed:
            self._hub_error(403, {"X-Error-Code": "GatedRepo", "X-Error-Message": f"Access to {repo_id} is restricted"})
            return
        if repo.token is not None and not allowed:
            if auth is None:
                self._hub_error(401, {"X-Error-Code": "RepoNotFound"})
            else:
                self._hub_error(401, {"X-Error-Message": "Invalid credentials in Authorization header"})
            return
        if rev not in ("main", repo.commit):
            self._hub_error(404, {"X-Error-Code": "RevisionNotFound"})
            return
        body = repo.files.get(filename)
        if body is None:
            self._hub_error(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit})
            return
        sha256 = hashlib.sha256(body).hexdigest()
        git_sha = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
        if filename.endswith(LFS_SUFFIXES):
            # as the hub does for LFS files: the metadata on a redirect to another origin, which serves the bytes
            blob = f"/blobs/{sha256}"
            self.server.routes.setdefault(blob, Route(body))
            self.send_response(302)
            self.send_header("Location", self.server.cdn_base + blob)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{git_sha}"')
            self.send_header("X-Linked-Etag", f'"{sha256}"')
            self.send_header("X-Linked-Size", str(len(body)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{git_sha}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _hub_error(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

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
    """HTTP servers on 127.0.0.1 serving bytes by path and hub repos, counting every request.

    Hub repos answer huggingface_hub's file resolution; their LFS files redirect to a second
    listener (another origin, as the hub's storage is), which serves the bytes.
    """

    def __init__(self) -> None:
        self._servers = (_Server(("127.0.0.1", 0), _Handler), _Server(("127.0.0.1", 0), _Handler))
        routes: dict[str, Route] = {}
        hub: dict[str, HubRepo] = {}
        counts: collections.Counter[str] = collections.Counter()
        log: list[Request] = []
        lock = threading.Lock()
        self._server = self._servers[0]
        for srv, role in zip(self._servers, ("main", "cdn"), strict=True):
            srv.routes, srv.hub, srv.counts, srv.log, srv.lock = routes, hub, counts, log, lock
            srv.role = "main" if role == "main" else "cdn"
            srv.cdn_base = _base(self._servers[1])
        # a short poll interval keeps shutdown (once per test) from costing half a second
        self._threads = [threading.Thread(target=s.serve_forever, args=(0.02,), daemon=True) for s in self._servers]

    def __enter__(self) -> CheckpointServer:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()

    @property
    def base(self) -> str:
        """http://127.0.0.1:<port>"""
        return _base(self._server)

    def add(self, path: str, body: bytes, mode: Mode = "ok") -> str:
        """Serve body at path; returns its URL."""
        self._server.routes[path] = Route(body, mode)
        return self.base + path

    def add_repo(
        self, repo_id: str, files: Mapping[str, bytes], *, token: str | None = None, gated: bool = False
    ) -> HubRepo:
        """Serve a hub repo with these files at a commit derived from them."""
        digest = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode())
        repo = HubRepo(files=dict(files), commit=digest.hexdigest(), token=token, gated=gated)
        self._server.hub[repo_id] = repo
        return repo

    def count(self, path: str) -> int:
        """How many requests (GET or HEAD) path has had."""
        with self._server.lock:
            return self._server.counts[path]

    def total(self) -> int:
        """How many requests the servers have had."""
        with self._server.lock:
            return sum(self._server.counts.values())

    def requests(self) -> list[Request]:
        """Every request so far, in order."""
        with self._server.lock:
            return list(self._server.log)


def _base(srv: _Server) -> str:
    host, port = srv.server_address[:2]
    return f"http://{host!s}:{port}"


HUB_ENV = ("HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")


def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: CheckpointServer) -> Path:
    """An empty zoo cache (ZOO_CACHE_DIR) and an empty Hugging Face cache (HF_HUB_CACHE, see hub_cache_of),
    the hub endpoint on the loopback server (HF_ENDPOINT), online, no token."""
    root = tmp_path / "cache"
    for name in HUB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ZOO_CACHE_DIR", str(root))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache_of(root)))
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    # huggingface_hub fixes its own offline switch at import, from the environment of that moment (a
    # user's HF_HUB_OFFLINE, or a test that set it): the loopback hub must be reachable all the same.
    # zoo reads HF_HUB_OFFLINE itself at each call, which the tests set and unset as they need.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    return root


def hub_cache_of(cache_root: Path) -> Path:
    """The Hugging Face cache isolated_cache set beside zoo's cache root."""
    return cache_root.parent / "hf-hub-cache"


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
