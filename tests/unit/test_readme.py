"""Every ```python block of README.md runs as written (issue 20, target 9).

Each block runs in a fresh namespace, in an empty working directory, with empty zoo and Hugging Face
caches and no connection beyond the loopback interface. A block that needs published weights says
so on the line before its fence, `<!-- readme-test: needs-network -->` (invisible when rendered):
offline (ZOO_OFFLINE=1, HF_HUB_OFFLINE=1, no socket at all) it must stop at its first
`pretrained=True` call with zoo's WeightsUnavailableError naming the hub repo and file it looked
for; against a loopback hub serving weights of the right shapes (random ones) under the catalogue's
repo ids, it must run to its end. `needs-cuda` marks a block that runs only on a GPU (NCCL): it runs,
as a single rank, where CUDA is available. Every block is also read without running it: it
compiles, uses no name it neither defines nor imports, and holds no `...` placeholder where Python
would evaluate it. Other languages' blocks (sh, bash) are not run.
"""

from __future__ import annotations

import ast
import builtins
import re
import socket
import symtable
from collections.abc import Iterator
from pathlib import Path
from typing import Any, overload

import attrs
import pytest
import torch

import zoo
from weights_support import CheckpointServer, isolated_cache, safetensors_bytes
from zoo.domain.errors import WeightsUnavailableError

pytestmark = pytest.mark.usefixtures("one_thread")

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = re.compile(r"<!-- readme-test: (?P<flags>[a-z -]+?) -->")
FLAGS = frozenset({"needs-network", "needs-cuda"})
# hub repos a block uploads (`hf-hub:` names): served from the folder the block itself wrote, as it is when asked for
UPLOADS = {"me/r18-pets": "runs/r18-pets"}
# the first argument of a create_model call that asks for published weights
PRETRAINED = re.compile(r"create_model\(\s*\"(?P<name>[^\"]+)\"[^()]*?\bpretrained=True")


@attrs.frozen
class Block:
    """One ```python block: where it starts, its code and its markers."""

    line: int  # README.md's line number of the block's first line of code
    code: str
    flags: frozenset[str]
    section: str  # the heading above it

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"L{self.line}-{slug}"

    @property
    def needs_network(self) -> bool:
        return "needs-network" in self.flags

    @property
    def needs_cuda(self) -> bool:
        return "needs-cuda" in self.flags


def readme_blocks(text: str) -> list[Block]:
    """The python blocks of a markdown text; a marker must sit on the line just before a python fence."""
    lines = text.splitlines()
    blocks: list[Block] = []
    markers: dict[int, frozenset[str]] = {}
    section = ""
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if (m := MARKER.fullmatch(stripped)) is not None:
            flags = frozenset(m["flags"].split())
            if unknown := flags - FLAGS:
                raise ValueError(
                    f"README.md:{i + 1}: unknown readme-test flag(s) {sorted(unknown)}; known: {sorted(FLAGS)}"
                )
            markers[i] = flags
        elif stripped.startswith("#"):
            section = stripped.lstrip("#").strip()
        elif stripped.startswith("```"):
            info = stripped[3:].strip()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise ValueError(f"README.md:{i + 1}: the ``` fence is never closed")
            if info == "python":
                code = "\n".join(lines[i + 1 : end]) + "\n"
                blocks.append(Block(line=i + 2, code=code, flags=markers.pop(i - 1, frozenset()), section=section))
            i = end
        i += 1
    if markers:
        stray = ", ".join(f"README.md:{k + 1}" for k in sorted(markers))
        raise ValueError(f"readme-test markers not on the line just before a ```python fence: {stray}")
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
NETWORK_BLOCKS = [b for b in BLOCKS if b.needs_network]


def run_block(block: Block) -> None:
    """Run the block as a script of its own; tracebacks name README.md and its line numbers."""
    code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    torch.manual_seed(0)
    exec(code, {"__name__": "__readme__"})


def readme_lines(exc: BaseException) -> list[int]:
    """The README.md lines an exception's traceback passed through, outermost first."""
    lines: list[int] = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(README):
            lines.append(tb.tb_lineno)
        tb = tb.tb_next
    return lines


def first_pretrained_call(block: Block) -> tuple[int, str]:
    """README line and model name of the block's first create_model(NAME, pretrained=True) reaching for the network."""
    tree = ast.parse(block.code)
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and any(
            k.arg == "pretrained" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords
        )
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and not node.args[0].value.startswith("local-dir:")
    ]
    assert calls, f"{block.id} is marked needs-network but has no create_model(NAME, pretrained=True)"
    first = min(calls, key=lambda c: (c.lineno, c.col_offset))
    name = first.args[0]
    assert isinstance(name, ast.Constant)
    return block.line + first.lineno - 1, str(name.value)


# --- the environment a block runs in ---------------------------------------------------------------------


def limit_sockets(monkeypatch: pytest.MonkeyPatch, *, loopback: bool) -> None:
    """Refuse every internet connection (and, unless loopback, every loopback one too): nothing reaches out."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # unix sockets stay on the machine
        host = str(address[0])
        if not (loopback and host in ("127.0.0.1", "::1", "localhost")):
            raise OSError(f"README test: no network here, refused a connection to {address!r}")

    def connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


def enter_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory holding only the picture the snippets open (cat.jpg)."""
    from PIL import Image

    work = tmp_path / "work"
    work.mkdir()
    Image.linear_gradient("L").convert("RGB").resize((320, 240)).save(work / "cat.jpg")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline: empty zoo and hub caches, ZOO_OFFLINE=1 and HF_HUB_OFFLINE=1, no socket beyond the machine."""
    from huggingface_hub import constants

    for name in ("HF_ENDPOINT", "HF_TOKEN", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "zoo-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    limit_sockets(monkeypatch, loopback=False)
    return enter_workdir(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def checkpoints() -> Iterator[dict[str, bytes]]:
    """Random weights of each served name, as safetensors bytes; built once per module, released after it."""
    built: dict[str, bytes] = {}
    yield built
    built.clear()


class FolderFiles(dict[str, bytes]):
    """A served hub repo's files, read from a folder when asked for: the folder 'uploaded' as it is then."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    @overload  # type: ignore[override]
    def get(self, key: str, default: None = None, /) -> bytes | None: ...
    @overload
    def get(self, key: str, default: bytes, /) -> bytes: ...
    def get(self, key: str, default: bytes | None = None, /) -> bytes | None:
        path = self.folder / key
        return path.read_bytes() if path.is_file() else default


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: CheckpointServer, checkpoints: dict[str, bytes]
) -> tuple[CheckpointServer, Path, dict[str, bytes]]:
    """Online against a loopback hub (HF_ENDPOINT) with empty caches; only loopback connections."""
    isolated_cache(tmp_path, monkeypatch, server)
    limit_sockets(monkeypatch, loopback=True)
    return server, enter_workdir(tmp_path, monkeypatch), checkpoints


def serve_weights(server: CheckpointServer, work: Path, checkpoints: dict[str, bytes], block: Block) -> None:
    """Serve every published checkpoint the block asks for (random weights, the right shapes) and its uploads."""
    for name in dict.fromkeys(m["name"] for m in PRETRAINED.finditer(block.code)):
        if name.startswith("local-dir:"):
            continue
        if name.startswith("hf-hub:"):
            repo_id = name.removeprefix("hf-hub:")
            assert repo_id in UPLOADS, f"{block.id} loads {name}: name the folder it uploads in UPLOADS"
            server.add_repo(repo_id, {}).files = FolderFiles(work / UPLOADS[repo_id])
            continue
        cfg = zoo.get_default_cfg(name)
        assert cfg.hf_hub_id, f"{name} has no hub repo to serve"
        if name not in checkpoints:
            torch.manual_seed(0)
            checkpoints[name] = safetensors_bytes(zoo.create_model(name).state_dict())
        server.add_repo(cfg.hf_hub_id, {"model.safetensors": checkpoints[name]})


@pytest.fixture
def single_rank(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment a launcher gives rank 0 of 1 (torch.distributed's env:// rendezvous); torn down after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def prepare_cuda(block: Block, request: pytest.FixtureRequest) -> None:
    """A needs-cuda block runs as rank 0 of 1 where CUDA is available; elsewhere it is only read."""
    if not block.needs_cuda:
        return
    if not torch.cuda.is_available():
        pytest.skip(f"{block.id} needs CUDA (NCCL); without it the block is only read (test_block_is_self_contained)")
    request.getfixturevalue("single_rank")


def undefined_names(code: str) -> set[str]:
    """Names the code reads (at any depth) that it neither assigns, defines nor imports, and that are no builtins."""
    top = symtable.symtable(code, str(README), "exec")
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    used: set[str] = set()
    tables = [top]
    while tables:
        table = tables.pop()
        used |= {s.get_name() for s in table.get_symbols() if s.is_referenced() and (table is top or s.is_global())}
        tables.extend(table.get_children())
    return used - defined - set(dir(builtins))


def placeholder_lines(code: str) -> list[int]:
    """Lines with a `...` Python would evaluate; a stub body (`class C: ...`) and `x[..., 0]` are real code."""
    tree = ast.parse(code)
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            last = node.body[-1]
            if isinstance(last, ast.Expr) and isinstance(last.value, ast.Constant) and last.value.value is Ellipsis:
                allowed.add(id(last.value))
        elif isinstance(node, ast.Subscript):
            allowed |= {id(n) for n in ast.walk(node.slice)}
    return sorted(
        n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value is Ellipsis and id(n) not in allowed
    )


# --- the tests -------------------------------------------------------------------------------------------


def test_readme_has_python_blocks_and_markers() -> None:
    assert BLOCKS, "README.md has ```python blocks"
    assert NETWORK_BLOCKS, "the pretrained-weights snippets are marked needs-network"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_block_is_self_contained(block: Block) -> None:
    """It compiles, defines or imports every name it uses, and has no `...` where a value belongs."""
    compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    assert not undefined_names(block.code), f"{block.id}: undefined names {sorted(undefined_names(block.code))}"
    lines = [block.line + n - 1 for n in placeholder_lines(block.code)]
    assert not lines, f"{block.id}: `...` placeholder(s) evaluated at README.md line(s) {lines}; use a comment"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_block_runs_offline(block: Block, offline: Path, request: pytest.FixtureRequest) -> None:
    """Offline, a block runs to its end; one marked needs-network stops at its first pretrained=True, zoo's error."""
    prepare_cuda(block, request)
    if not block.needs_network:
        run_block(block)
        return
    line, name = first_pretrained_call(block)
    with pytest.raises(WeightsUnavailableError) as e:
        run_block(block)
    assert isinstance(e.value, zoo.ZooError)
    assert readme_lines(e.value)[-1:] == [line], f"{block.id}: expected the offline error at README.md:{line}"
    message = str(e.value)
    assert "ZOO_OFFLINE=1" in message
    hub_id = zoo.get_default_cfg(name).hf_hub_id
    assert "model.safetensors" in message
    assert hub_id in message


@pytest.mark.parametrize("block", NETWORK_BLOCKS, ids=lambda b: b.id)
def test_network_block_runs_with_served_weights(
    block: Block, served: tuple[CheckpointServer, Path, dict[str, bytes]], request: pytest.FixtureRequest
) -> None:
    """Against a loopback hub serving the catalogue's repos (random weights), a needs-network block runs to its end."""
    prepare_cuda(block, request)
    server, work, checkpoints = served
    serve_weights(server, work, checkpoints, block)
    run_block(block)
    assert server.total() > 0, f"{block.id} fetched nothing: is it still needs-network?"
