"""--device on predict and export (issue 26): the device runs the model, an absent one is a one-line error
before any work; CUDA cases run where there is a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import zoo
from zoo.cli import main

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
ABSENT = "cuda:99" if torch.cuda.device_count() < 99 else "nope"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file(zoo.create_model("test_resnet").state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pictures") / "orange.png"
    Image.new("RGB", (64, 48), (230, 120, 20)).save(path)
    return path


@pytest.mark.parametrize("device", DEVICES)
def test_predict_runs_on_the_device_it_is_given(
    device: str, checkpoint: Path, picture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["predict", str(picture), "--model", "test_resnet", "--checkpoint", str(checkpoint), "--json"]
    assert main([*argv, "--device", "cpu"]) == 0
    on_cpu = json.loads(capsys.readouterr().out)["images"][0]["predictions"]
    assert main([*argv, "--device", device]) == 0
    here = json.loads(capsys.readouterr().out)["images"][0]["predictions"]
    assert [p["index"] for p in here] == [p["index"] for p in on_cpu]
    assert [p["probability"] for p in here] == pytest.approx([p["probability"] for p in on_cpu], abs=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_export_runs_on_the_device_it_is_given(device: str, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt2"
    argv = ["export", "test_resnet", "--checkpoint", str(checkpoint), "--format", "pt2", "--out", str(out)]
    assert main([*argv, "--device", device]) == 0
    program = torch.export.load(str(out))
    assert {p.device.type for p in program.state_dict.values()} == {device}


def test_an_absent_device_is_refused_before_any_work(
    checkpoint: Path, picture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.pt2"
    commands = [
        ["predict", str(picture), "--model", "test_resnet", "--checkpoint", str(checkpoint)],
        ["export", "test_resnet", "--format", "pt2", "--out", str(out)],
        ["benchmark", "test_resnet"],
        ["validate", str(tmp_path), "--model", "test_resnet"],
    ]
    for argv in commands:
        assert main([*argv, "--device", ABSENT]) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        assert f"device={ABSENT!r}" in captured.err
        assert "available" in captured.err
        assert "Traceback" not in captured.err
    assert not out.exists()
