"""The weights commands of the CLI: zoo fetch, zoo cache list|clear, and the demo's weights section."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from weights_support import CheckpointServer, cache_files, hub_cache_of, safetensors_bytes, small_state_dict
from zoo.cli import _demo_weights, main
from zoo.domain.values import DefaultCfg
from zoo.services.weights import CachedWeightLoader


def test_fetch_then_list_then_clear(
    server: CheckpointServer, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # resnet18.a1_in1k names hf_hub_id timm/resnet18.a1_in1k; HF_ENDPOINT points at the loopback server
    repo = server.add_repo("timm/resnet18.a1_in1k", {"model.safetensors": safetensors_bytes(small_state_dict())})
    assert main(["fetch", "resnet18.a1_in1k", "--no-progress"]) == 0
    hub_cache = hub_cache_of(cache_dir)
    snapshot = hub_cache / "models--timm--resnet18.a1_in1k" / "snapshots" / repo.commit / "model.safetensors"
    assert capsys.readouterr().out.strip() == str(snapshot)
    assert server.count("/timm/resnet18.a1_in1k/resolve/main/model.safetensors") == 1
    assert cache_files(cache_dir) == []  # zoo's own cache holds URL downloads only

    url = server.add("/w/net.safetensors", safetensors_bytes(small_state_dict()))
    assert main(["fetch", "resnet18.a1_in1k"]) == 0  # from the hub cache, no request
    assert server.count("/timm/resnet18.a1_in1k/resolve/main/model.safetensors") == 1
    CachedWeightLoader(progress=False).fetch(DefaultCfg(url=url))
    capsys.readouterr()

    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "net.safetensors" in out
    assert f"1 file(s), 0.0 MiB, in {cache_dir}" in out
    assert f"hub weights are in the Hugging Face cache {hub_cache}" in out

    assert main(["cache", "clear"]) == 0
    assert "removed 1 file(s)" in capsys.readouterr().out
    assert cache_files(cache_dir) == []
    assert snapshot.is_file()  # the Hugging Face cache is shared with other libraries: never cleared by zoo


def test_fetch_failure_is_a_clear_error(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert main(["fetch", "resnet18.a1_in1k"]) == 2
    err = capsys.readouterr().err
    assert "zoo: error: ZOO_OFFLINE=1" in err
    assert "model.safetensors, pytorch_model.bin of hub repo timm/resnet18.a1_in1k" in err
    assert server.total() == 0


def test_demo_weights_reports_the_adaptations(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the demo shows the dropped head as a note, not as a stray warning
        _demo_weights()
    out = capsys.readouterr().out
    assert "num_classes=10: the checkpoint's classifier fc.weight (1000, 512), fc.bias (1000,)" in out
    assert "'fc' freshly initialised" in out
    assert "'conv1.weight' adapted from 3 input channels (RGB filters summed)" in out
    assert "sum of the source's RGB filters| = 0.0e+00" in out
    assert "logits (1, 10)" in out
    assert cache_files(cache_dir) == []  # the demo used its own temporary cache
