"""The weights commands of the CLI: zoo fetch, zoo cache list|clear, and the demo's weights section."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from weights_support import CheckpointServer, cache_files, safetensors_bytes, small_state_dict
from zoo.cli import _demo_weights, main


def test_fetch_then_list_then_clear(
    server: CheckpointServer, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # resnet18.a1_in1k names hf_hub_id timm/resnet18.a1_in1k; ZOO_HUB_ENDPOINT points at the loopback server
    route = "/timm/resnet18.a1_in1k/resolve/main/model.safetensors"
    server.add(route, safetensors_bytes(small_state_dict()))
    assert main(["fetch", "resnet18.a1_in1k", "--no-progress"]) == 0
    (path,) = cache_files(cache_dir)
    assert capsys.readouterr().out.strip() == str(path)
    assert server.count(route) == 1

    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "hub/timm--resnet18.a1_in1k/model.safetensors" in out
    assert f"1 file(s), 0.0 MiB, in {cache_dir}" in out

    assert main(["cache", "clear"]) == 0
    assert "removed 1 file(s)" in capsys.readouterr().out
    assert cache_files(cache_dir) == []


def test_fetch_failure_is_a_clear_error(
    server: CheckpointServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert main(["fetch", "resnet18.a1_in1k"]) == 2
    err = capsys.readouterr().err
    assert "zoo: error: ZOO_OFFLINE=1" in err
    assert "timm--resnet18.a1_in1k/model.safetensors" in err
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
