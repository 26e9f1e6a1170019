"""zoo benchmark (issue 26): timed steps on tiny models, the reference's column names, its errors."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

import zoo
from zoo.api import ModelZoo
from zoo.benchmark import benchmark_model
from zoo.cli import main
from zoo.describe import count_macs
from zoo.domain.errors import DeviceUnavailableError, InvalidValueError, UnknownModelError

REFERENCE_COLUMNS = ["infer_samples_per_sec", "infer_step_time", "infer_batch_size", "infer_img_size", "infer_gmacs"]
PAUSE = 0.02  # seconds each forward of Sleepy takes at least


class Sleepy(nn.Module):
    """A classifier whose every forward takes PAUSE seconds and is counted."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Conv2d(3, 3, 1)
        self.head = nn.Linear(3, num_classes)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(PAUSE)
        logits: torch.Tensor = self.head(self.stem(x).mean(dim=(2, 3)))
        return logits


def test_benchmark_times_the_steps_after_the_warm_up() -> None:
    registry = zoo.Registry()
    built: list[Sleepy] = []

    @registry.register_model
    def sleepy(*, num_classes: int = 4, in_chans: int = 3) -> nn.Module:
        built.append(Sleepy(num_classes))
        return built[-1]

    result = benchmark_model(
        "sleepy", batch_size=3, img_size=8, warmup=2, steps=5, train=True, device="cpu", zoo=ModelZoo(registry=registry)
    )
    assert built[0].calls == 2 * (2 + 5)  # warm-up and timed steps, inference then training
    assert PAUSE * 1000 <= result.infer.step_time < PAUSE * 1000 * 20
    assert result.infer.samples_per_sec == pytest.approx(3 * 1000 / result.infer.step_time)
    assert result.train is not None
    assert result.train.step_time >= PAUSE * 1000
    row = result.to_dict()
    assert [c for c in row if c in REFERENCE_COLUMNS] == REFERENCE_COLUMNS
    assert (row["infer_batch_size"], row["infer_img_size"], row["train_batch_size"]) == (3, 8, 3)
    classes = built[0].num_classes  # the cfg's (create_model passes it)
    assert result.param_count == pytest.approx((3 * 3 + 3 + 3 * classes + classes) / 1e6)
    assert result.gmacs == pytest.approx(
        (3 * 3 * 8 * 8 + 3 * classes) / 1e9
    )  # the 1x1 conv's and the head's, per image
    assert row["infer_peak_mem_mb"] is None  # measured on CUDA only


def test_benchmark_of_a_zoo_model_reports_its_size_and_cost() -> None:
    result = benchmark_model("test_resnet", batch_size=2, img_size=64, warmup=0, steps=1, device="cpu", fuse=True)
    model = zoo.create_model("test_resnet")
    assert result.param_count == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    assert result.gmacs == pytest.approx(count_macs(model, 64) / 1e9)
    assert (result.fused, result.train, result.device) == (True, None, "cpu")
    assert "train_samples_per_sec" not in result.to_dict()


def test_benchmark_refuses_what_it_cannot_do() -> None:
    with pytest.raises(InvalidValueError, match="fuse=True with train=True"):
        benchmark_model("test_resnet", fuse=True, train=True, device="cpu")
    with pytest.raises(InvalidValueError, match="steps=0"):
        benchmark_model("test_resnet", steps=0, device="cpu")
    with pytest.raises(DeviceUnavailableError, match="cuda:99"):
        benchmark_model("test_resnet", device="cuda:99")
    with pytest.raises(InvalidValueError, match="img_size=3 is invalid for 'test_convnext'"):
        benchmark_model("test_convnext", img_size=3, device="cpu", warmup=0, steps=1)  # smaller than its 4x4 stem
    with pytest.raises(InvalidValueError, match="amp='fp8'"):
        benchmark_model("test_resnet", amp="fp8", device="cpu")  # type: ignore[arg-type]  # as an untyped caller might


def test_zoo_benchmark_prints_one_row_per_name(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["benchmark", "test_resnet", "test_vit", "--batch-size", "1", "--warmup", "0", "--steps", "1"]
    assert main([*argv, "--device", "cpu", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["test_resnet", "test_vit"]
    assert all(r["infer_batch_size"] == 1 and r["infer_samples_per_sec"] > 0 for r in rows)
    assert rows[1]["infer_img_size"] == zoo.get_default_cfg("test_vit").input_size[1]
    assert main([*argv, "--device", "cpu", "--amp", "bf16", "--channels-last"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "infer/s", "ms/step"]
    assert [line.split()[0] for line in lines[1:]] == ["test_resnet", "test_vit"]
    assert main([*argv, "--device", "cpu", "--optimize", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    dtype = zoo.optimize_for_inference(zoo.create_model("test_resnet"), check=False).plan.dtype
    assert rows[0]["optimized"].startswith(f"{dtype}, channels_last, ")
    assert rows[1]["optimized"].startswith(f"{dtype}, contiguous, 0 norms folded")
    assert main([*argv, "--device", "cpu", "--optimize", "--fuse"]) == 2
    assert "optimize=True with fuse is invalid" in capsys.readouterr().err
    # an unknown name is refused before any model is timed
    assert main(["benchmark", "test_resnet", "resnet19", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "resnet19" in captured.err
    assert captured.out == ""
    with pytest.raises(UnknownModelError):
        benchmark_model("resnet19", device="cpu")
