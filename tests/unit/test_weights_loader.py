"""CachedWeightLoader against a loopback server and files the tests write: sources, cache, formats."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import pickle
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.queues import Queue
from pathlib import Path

import pytest
import torch

from weights_support import (
    CheckpointServer,
    assert_same,
    cache_files,
    digests,
    fetch_in_process,
    hub_cache_of,
    safetensors_bytes,
    small_state_dict,
    torch_bytes,
)
from zoo.domain.errors import (
    CheckpointFormatError,
    ChecksumMismatchError,
    DownloadError,
    InvalidValueError,
    WeightsError,
    WeightsUnavailableError,
)
from zoo.domain.values import DefaultCfg
from zoo.services.weights import CachedWeightLoader, WeightCache


def load(cfg: DefaultCfg, checkpoint_path: str | None = None) -> dict[str, torch.Tensor]:
    return CachedWeightLoader(progress=False).load_state_dict(cfg, checkpoint_path=checkpoint_path)


# -- sources and the cache ---------------------------------------------------------------------


def test_url_download_then_cache_hit(server: CheckpointServer, cache_dir: Path) -> None:
    sd = small_state_dict()
    url = server.add("/w/model.safetensors", safetensors_bytes(sd))
    assert_same(load(DefaultCfg(url=url)), sd)
    assert len(cache_files(cache_dir)) == 1
    assert_same(load(DefaultCfg(url=url)), sd)
    assert server.count("/w/model.safetensors") == 1  # the second load was served by the cache


def test_same_file_name_from_two_urls_are_two_entries(server: CheckpointServer, cache_dir: Path) -> None:
    a, b = small_state_dict(1), small_state_dict(2)
    url_a = server.add("/a/model.safetensors", safetensors_bytes(a))
    url_b = server.add("/b/model.safetensors", safetensors_bytes(b))
    assert_same(load(DefaultCfg(url=url_a)), a)
    assert_same(load(DefaultCfg(url=url_b)), b)
    assert len(cache_files(cache_dir)) == 2


def test_hub_id_prefers_safetensors(server: CheckpointServer, cache_dir: Path) -> None:
    sd = small_state_dict()
    repo = server.add_repo(
        "org/net.tag",
        {"model.safetensors": safetensors_bytes(sd), "pytorch_model.bin": torch_bytes(small_state_dict(9))},
    )
    assert_same(load(DefaultCfg(hf_hub_id="org/net.tag", url=server.base + "/unused.pth")), sd)
    assert server.count("/org/net.tag/resolve/main/pytorch_model.bin") == 0
    assert server.count("/unused.pth") == 0
    # huggingface_hub's cache layout, in the Hugging Face cache, not zoo's
    snapshot = hub_cache_of(cache_dir) / "models--org--net.tag" / "snapshots" / repo.commit / "model.safetensors"
    assert snapshot.is_file()
    assert cache_files(cache_dir) == []


def test_hub_falls_back_to_bin_then_to_url(server: CheckpointServer, cache_dir: Path) -> None:
    sd = small_state_dict()
    server.add_repo("org/bin", {"pytorch_model.bin": torch_bytes(sd)})
    assert_same(load(DefaultCfg(hf_hub_id="org/bin")), sd)
    assert server.count("/org/bin/resolve/main/model.safetensors") == 1  # asked first, 404

    other = small_state_dict(3)
    url = server.add("/release/net-weights.pth", torch_bytes(other))
    assert_same(load(DefaultCfg(hf_hub_id="org/missing", url=url)), other)


def test_no_source_names_every_place_tried(server: CheckpointServer, cache_dir: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as e:
        load(DefaultCfg(hf_hub_id="org/none", url=server.base + "/none.pth"))
    msg = str(e.value)
    for tried in ("'org/none' not found", "model.safetensors", "none.pth", "404"):
        assert tried in msg
    with pytest.raises(WeightsUnavailableError, match="names no weights"):
        load(DefaultCfg())
    assert cache_files(cache_dir) == []


def test_invalid_locations_name_what_is_valid(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidValueError, match="http, https, file"):
        load(DefaultCfg(url="ftp://example.invalid/x.pth"))
    for bad in ("../../etc", "org/name@../x", "org/a/b"):
        with pytest.raises(InvalidValueError, match="org/name"):
            load(DefaultCfg(hf_hub_id=bad))
    monkeypatch.setenv("ZOO_OFFLINE", "maybe")
    with pytest.raises(InvalidValueError, match=r"ZOO_OFFLINE='maybe'.*expected one of 1, true"):
        load(DefaultCfg(url="http://127.0.0.1:9/x.pth"))


def test_checksum_from_cfg_is_verified(server: CheckpointServer, cache_dir: Path) -> None:
    body = safetensors_bytes(small_state_dict())
    url = server.add("/w/model.safetensors", body)
    with pytest.raises(ChecksumMismatchError, match="expected " + "0" * 64):
        load(DefaultCfg(url=url, sha256="0" * 64))
    assert cache_files(cache_dir) == []
    good = hashlib.sha256(body).hexdigest()
    assert_same(load(DefaultCfg(url=url, sha256=good)), small_state_dict())


def test_hash_prefix_in_file_name_is_verified(server: CheckpointServer, cache_dir: Path) -> None:
    body = torch_bytes(small_state_dict())
    prefix = hashlib.sha256(body).hexdigest()[:8]
    bad_prefix = "0" * 8 if prefix != "0" * 8 else "1" * 8
    with pytest.raises(ChecksumMismatchError, match=f"start with {bad_prefix} by the torch.hub file-name rule"):
        load(DefaultCfg(url=server.add(f"/net-{bad_prefix}.pth", body), check_hash=True))
    assert cache_files(cache_dir) == []
    assert_same(load(DefaultCfg(url=server.add(f"/net-{prefix}.pth", body), check_hash=True)), small_state_dict())


def test_server_closing_mid_body_leaves_nothing(server: CheckpointServer, cache_dir: Path) -> None:
    url = server.add("/w/model.safetensors", safetensors_bytes(small_state_dict()), mode="truncate")
    with pytest.raises(DownloadError, match=r"closed the connection after \d+ of \d+ bytes"):
        load(DefaultCfg(url=url))
    assert cache_files(cache_dir) == []


def test_corrupt_download_is_refused_and_not_cached(server: CheckpointServer, cache_dir: Path) -> None:
    body = bytearray(safetensors_bytes(small_state_dict()))
    body[8:12] = b"!!!!"  # damage the JSON header
    with pytest.raises(CheckpointFormatError, match="not a checkpoint zoo can read"):
        load(DefaultCfg(url=server.add("/bad.safetensors", bytes(body))))
    torch_body = torch_bytes(small_state_dict())
    with pytest.raises(CheckpointFormatError, match="damaged torch checkpoint"):
        load(DefaultCfg(url=server.add("/bad.pth", torch_body[: len(torch_body) // 2])))
    assert cache_files(cache_dir) == []


def test_unreadable_cache_entry_is_removed(server: CheckpointServer, cache_dir: Path) -> None:
    url = server.add("/w/model.safetensors", safetensors_bytes(small_state_dict()))
    load(DefaultCfg(url=url))
    (entry,) = cache_files(cache_dir)
    entry.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointFormatError, match="cached copy was removed"):
        load(DefaultCfg(url=url))
    assert cache_files(cache_dir) == []
    assert_same(load(DefaultCfg(url=url)), small_state_dict())
    assert server.count("/w/model.safetensors") == 2


def test_offline_uses_the_cache_only(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.add("/w/model.safetensors", safetensors_bytes(small_state_dict()))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(
        WeightsUnavailableError, match=r"ZOO_OFFLINE=1 .* not in the cache: looked for .*model\.safetensors"
    ):
        load(DefaultCfg(url=url))
    assert server.total() == 0
    monkeypatch.setenv("ZOO_OFFLINE", "0")
    load(DefaultCfg(url=url))
    monkeypatch.setenv("ZOO_OFFLINE", "true")
    assert_same(load(DefaultCfg(url=url)), small_state_dict())
    assert server.total() == 1


def test_four_processes_download_one_file_once(server: CheckpointServer, cache_dir: Path) -> None:
    sd = {f"t{i}": torch.full((256, 256), float(i)) for i in range(4)}
    url = server.add("/big/model.safetensors", safetensors_bytes(sd), mode="slow")
    # fork starts in milliseconds where spawn re-imports torch; the child runs no torch kernels
    ctx: ForkContext | SpawnContext = (
        multiprocessing.get_context("fork")
        if "fork" in multiprocessing.get_all_start_methods()
        else multiprocessing.get_context("spawn")
    )
    barrier = ctx.Barrier(4)
    results: Queue[dict[str, str]] = ctx.Queue()
    procs = [ctx.Process(target=fetch_in_process, args=(str(cache_dir), url, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert server.count("/big/model.safetensors") == 1
    assert got == [digests(sd)] * 4
    assert len(cache_files(cache_dir)) == 1


def test_progress_bar_is_switchable(
    server: CheckpointServer, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = DefaultCfg(url=server.add("/p/model.safetensors", safetensors_bytes(small_state_dict())))
    CachedWeightLoader(progress=True).fetch(cfg)
    assert "model.safetensors" in capsys.readouterr().err
    WeightCache(cache_dir).clear()
    CachedWeightLoader().fetch(cfg)  # stderr is not a terminal under pytest: silent by default
    assert capsys.readouterr().err == ""


def test_fetch_list_and_clear(server: CheckpointServer, cache_dir: Path) -> None:
    cfg = DefaultCfg(url=server.add("/f/net.safetensors", safetensors_bytes(small_state_dict())))
    path = CachedWeightLoader(progress=False).fetch(cfg)
    (entry,) = WeightCache(cache_dir).entries()
    assert entry.path == path
    assert entry.size == path.stat().st_size
    assert entry.key.name == "net.safetensors"
    (cache_dir / "mine.txt").write_text("not zoo's")
    assert WeightCache(cache_dir).clear() == (1, entry.size)
    assert WeightCache(cache_dir).entries() == []
    assert (cache_dir / "mine.txt").exists()  # clear touches only what zoo wrote


def test_file_url_goes_through_the_cache(tmp_path: Path, cache_dir: Path) -> None:
    sd = small_state_dict()
    src = tmp_path / "ckpt.pth"
    src.write_bytes(torch_bytes(sd))
    assert_same(load(DefaultCfg(url=src.as_uri())), sd)
    assert len(cache_files(cache_dir)) == 1
    with pytest.raises(WeightsUnavailableError, match="cannot connect or open"):
        load(DefaultCfg(url=(tmp_path / "absent.pth").as_uri()))


# -- local files and formats -------------------------------------------------------------------


def test_local_files_are_read_in_place(tmp_path: Path, cache_dir: Path) -> None:
    sd = small_state_dict()
    path = tmp_path / "weights.safetensors"
    path.write_bytes(safetensors_bytes(sd))
    assert_same(load(DefaultCfg(), checkpoint_path=str(path)), sd)
    assert_same(load(DefaultCfg(file=str(path), url="http://127.0.0.1:9/never.pth")), sd)
    assert cache_files(cache_dir) == []
    with pytest.raises(WeightsUnavailableError, match=r"absent\.pth does not exist"):
        load(DefaultCfg(), checkpoint_path=str(tmp_path / "absent.pth"))
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    load(DefaultCfg(file=str(path), sha256=good))
    with pytest.raises(ChecksumMismatchError):
        load(DefaultCfg(file=str(path), sha256="f" * 64))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"module." + k: v for k, v in sd.items()},
        lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}},
    ],
    ids=["plain", "state_dict", "model", "module-prefix", "both"],
)
def test_wrappers_are_unwrapped(tmp_path: Path, wrap: object) -> None:
    sd = small_state_dict()
    path = tmp_path / "w.pth"
    path.write_bytes(torch_bytes(wrap(sd)))  # type: ignore[operator]  # the parametrised lambdas
    assert_same(load(DefaultCfg(), checkpoint_path=str(path)), sd)


def test_non_state_dict_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(torch_bytes({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointFormatError, match="not name -> tensor"):
        load(DefaultCfg(), checkpoint_path=str(path))


class _Payload:
    """Unpickling this creates a file: the proof that a loader ran code from a checkpoint."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.target), "w"))


def test_payload_really_runs_when_unpickled_unsafely(tmp_path: Path) -> None:
    # the control: a plain unpickler does run the payload, so the refusal below means something
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch-zip", "plain-pickle"])
def test_malicious_pickle_is_refused_unrun(
    tmp_path: Path, server: CheckpointServer, cache_dir: Path, kind: str
) -> None:
    marker = tmp_path / "pwned"
    if kind == "torch-zip":
        body = torch_bytes({"conv.weight": torch.zeros(1), "x": _Payload(marker)})
    else:
        buf = io.BytesIO()
        pickle.dump({"x": _Payload(marker)}, buf, protocol=2)
        body = buf.getvalue()
    path = tmp_path / "evil.pth"
    path.write_bytes(body)
    with pytest.raises(CheckpointFormatError, match=r"refused to unpickle.*open"):
        load(DefaultCfg(), checkpoint_path=str(path))
    with pytest.raises(CheckpointFormatError, match="refused to unpickle"):
        load(DefaultCfg(url=server.add("/evil.pth", body)))
    assert not marker.exists()
    assert cache_files(cache_dir) == []


def test_unusable_cache_dir_is_a_clear_error(
    server: CheckpointServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setenv("ZOO_CACHE_DIR", str(not_a_dir))
    url = server.add("/w/model.safetensors", safetensors_bytes(small_state_dict()))
    with pytest.raises(WeightsError, match=r"cannot write to the weights cache .*file.*ZOO_CACHE_DIR"):
        load(DefaultCfg(url=url))
