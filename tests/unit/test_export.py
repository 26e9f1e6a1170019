"""`zoo export` and zoo.services.export: ONNX runs in onnxruntime, .pt2 loads back, compile keeps one graph."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import zoo
from zoo.archs.resnet import ResNet
from zoo.cli import main
from zoo.domain import FeatureNotAvailableError, InvalidValueError
from zoo.services.export import (
    MAX_OPSET,
    MIN_OPSET,
    export_file,
    export_program,
    input_dims,
    min_dynamic_size,
    save_onnx,
)

ort = pytest.importorskip("onnxruntime")  # the zoo[onnx] extra, in the dev extra CI installs


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small forwards on one torch thread


def images(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


def run_onnx(path: Path, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    outputs: list[np.ndarray] = session.run(None, {image.name: x.numpy()})
    return outputs


def eager(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, list) else [out]


def assert_matches(got: list[np.ndarray], expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == tuple(b.shape)
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet18 weights with non-trivial BatchNorm statistics, as a safetensors file."""
    torch.manual_seed(3)
    model = zoo.create_model("resnet18")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None
            assert m.running_var is not None
            nn.init.uniform_(m.running_mean, -0.1, 0.1)
            nn.init.uniform_(m.running_var, 0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_cli_onnx_resnet18_from_checkpoint_runs_in_onnxruntime(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "resnet18.onnx"
    assert main(["export", "resnet18", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"resnet18 exported as onnx to {out}" in printed
    assert "batch     1 to any (dynamic)" in printed
    assert "height    64 to any (dynamic)" in printed
    model = zoo.create_model("resnet18", checkpoint_path=checkpoint).eval()
    x = images(3, 80, 72)  # neither the example's batch nor its size
    assert_matches(run_onnx(out, x), eager(model, x))


def test_cli_onnx_features_and_opset(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "features.onnx"
    argv = ["export", "resnet18", "--checkpoint", str(checkpoint), "--features", "--format", "onnx"]
    assert main([*argv, "--out", str(out), "--opset", str(MAX_OPSET)]) == 0
    import onnx

    assert {o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")} == {MAX_OPSET}
    extractor = zoo.create_model("resnet18", checkpoint_path=checkpoint, features_only=True).eval()
    x = images(1, 96, 64)
    got = run_onnx(out, x)
    assert len(got) == len(extractor.feature_info) == 5
    assert_matches(got, eager(extractor, x))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        # every layer kind of the family (deep stem, blur pooling, dense layers, transitions) at a depth that
        # keeps the ONNX translation to seconds: densenet121's 58 dense layers take half a minute on CI
        ("densenetblur121d", {"block_config": (2, 2, 2, 2)}),
        ("xception41", {}),
        ("darknet17", {}),
        ("vit_tiny_patch16_224", {"depth": 2, "dynamic_img_size": True}),
        ("convnext_tiny", {"depths": (1, 1, 1, 1)}),
        ("efficientnet_b0", {}),
        ("mobilenetv3_large_100", {}),
        ("regnetx_016", {}),
    ],
)
def test_onnx_of_each_family_runs_in_onnxruntime(name: str, kwargs: dict[str, Any], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(name, **kwargs).eval()
    program = export_program(model, images(2, 64, 64))
    path = save_onnx(program, tmp_path / f"{name}.onnx")
    x = images(3, 80, 96)
    assert_matches(run_onnx(path, x), eager(model, x))


def test_cli_pt2_round_trips_with_torch_export_load(tmp_path: Path, r18: ResNet) -> None:
    out = tmp_path / "resnet18.pt2"
    path, program = export_file(r18, out, fmt="pt2")
    assert path == out
    loaded = torch.export.load(out)
    assert (
        input_dims(loaded)
        == input_dims(program)
        == [
            ("batch", 1, None),
            ("channels", 3, 3),
            ("height", 64, None),
            ("width", 64, None),
        ]
    )
    x = images(3, 72, 80)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module()(x), r18(x), rtol=1e-5, atol=1e-6)


def test_missing_onnx_extra_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` raise ImportError
    out = tmp_path / "m.onnx"
    assert main(["export", "resnet18", "--format", "onnx", "--out", str(out)]) == 2
    assert "pip install zoo[onnx]" in capsys.readouterr().err
    with pytest.raises(
        FeatureNotAvailableError, match=r"needs onnxscript, which is not installed: pip install zoo\[onnx\]"
    ):
        export_file(nn.Identity(), out, fmt="onnx", example=images(2, 64, 64))
    assert not out.exists()


def test_bad_requests_are_refused_before_any_work(tmp_path: Path) -> None:
    model = nn.Conv2d(3, 4, 3)
    x = images(2, 64, 64)
    with pytest.raises(
        InvalidValueError, match=rf"opset=17 is invalid: expected an int in \[{MIN_OPSET}, {MAX_OPSET}\]"
    ):
        export_file(model, tmp_path / "m.onnx", fmt="onnx", opset=17, example=x)
    with pytest.raises(InvalidValueError, match="applies to 'onnx' only"):
        export_file(model, tmp_path / "m.pt2", fmt="pt2", opset=18, example=x)
    with pytest.raises(InvalidValueError, match="format='tflite' is invalid"):
        export_file(model, tmp_path / "m.tflite", fmt="tflite", example=x)
    with pytest.raises(InvalidValueError, match="does not exist"):
        export_file(model, tmp_path / "missing" / "m.pt2", fmt="pt2", example=x)
    with pytest.raises(InvalidValueError, match="example batch size=1 is invalid"):
        export_program(model, images(1, 64, 64))
    with pytest.raises(InvalidValueError, match="expected an image batch"):
        export_program(model, torch.zeros(2, 3, 64))
    with pytest.raises(InvalidValueError, match="expected both >= 64"):
        export_program(model, images(2, 32, 64), dynamic_size=True)
    assert list(tmp_path.iterdir()) == []


class FixedSize(nn.Module):
    """A head that flattens a fixed 4x4 map, so its input size cannot vary."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(16)
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.pool(x).flatten(1))
        return out


def test_a_fixed_size_holds_in_the_program_as_a_runtime_check() -> None:
    # guards torch cannot prove from the ranges become runtime asserts (the ceil-mode pooling of the 'd' ResNets
    # needs this); a size the model really fixes is then refused when the program runs, not when it is exported
    model = FixedSize().eval()
    program = export_program(model, images(2, 64, 64), dynamic_size=True)
    x = images(5, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))
        with pytest.raises(RuntimeError):
            program.module()(images(2, 96, 96))


def test_a_small_example_gives_a_fixed_size_with_a_warning() -> None:
    model = FixedSize().eval()
    with pytest.warns(UserWarning, match=r"fixed height/width of \(32, 32\): .* at least 64x64"):
        program = export_program(nn.Sequential(nn.Upsample(scale_factor=2), model), images(2, 32, 32))
    assert input_dims(program) == [("batch", 1, None), ("channels", 3, 3), ("height", 32, 32), ("width", 32, 32)]


def test_hook_extractor_exports() -> None:
    # forward hooks run as Python while torch.export traces, so their outputs are part of the graph
    extractor = zoo.create_model("resnet18", features_only=True, feature_cls="hook", out_indices=(1, 3)).eval()
    program = export_program(extractor, images(2, 64, 64))
    x = images(3, 72, 64)
    with torch.no_grad():
        for a, b in zip(program.module()(x), extractor(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_an_extractor_cut_before_strided_attention_keys_starts_at_their_depth() -> None:
    # mobilenetv4_hybrid_medium's stage at stride 16 (tap 3) attends to keys and values at stride 32: an
    # extractor ending there must not take 32x32 (keys 1x1, which torch.export specialises) as its floor
    extractor = zoo.create_model("mobilenetv4_hybrid_medium", features_only=True, out_indices=(3,)).eval()
    assert [t.reduction for t in extractor.feature_info] == [16]
    assert min_dynamic_size(extractor) == 64
    program = export_program(extractor, images(2, 64, 64), dynamic_size=True)
    assert input_dims(program)[2] == ("height", 64, None)
    x = images(2, 96, 80)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), extractor(x), rtol=1e-4, atol=1e-5)


# -- torch.compile ----------------------------------------------------------------------------


def test_compile_fullgraph_inductor_resnet18(r18: ResNet) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(r18, fullgraph=True, dynamic=False)  # fullgraph: a graph break raises
    x = images(2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), r18(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["list", "getter"])
def test_compile_fullgraph_feature_extractor(kind: str) -> None:
    # aot_eager traces through dynamo and AOTAutograd as inductor does, without generating C++: what could break
    # the graph is the extractor's Python, which this covers; inductor's code generation is covered above
    torch.manual_seed(0)
    extractor = zoo.create_model("resnet18", features_only=True, feature_cls=kind).eval()
    torch._dynamo.reset()
    compiled = torch.compile(extractor, fullgraph=True, backend="aot_eager")
    x = images(2, 64, 64)
    with torch.no_grad():
        for a, b in zip(compiled(x), extractor(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# -- save_onnx replaces its files as one change --------------------------------------------------------


@pytest.fixture(scope="module")
def small_program() -> tuple[nn.Module, torch.export.ExportedProgram]:
    torch.manual_seed(0)
    model = zoo.create_model("resnet10t", num_classes=5).eval()
    return model, export_program(model, images(2, 64, 64))


def test_a_failed_onnx_save_leaves_the_old_files_and_no_partial_one(
    tmp_path: Path, small_program: tuple[nn.Module, torch.export.ExportedProgram], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the user's model")
    (tmp_path / "m.onnx.data").write_bytes(b"the user's weights")
    real_save = torch.onnx.ONNXProgram.save

    def save_then_fail(self: torch.onnx.ONNXProgram, destination: str | Path, **kwargs: Any) -> None:
        real_save(self, destination, **kwargs)  # the whole file written, then the disk fills
        Path(destination).with_name("m.onnx.data").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_onnx(small_program[1], out)
    assert out.read_bytes() == b"the user's model"
    assert (tmp_path / "m.onnx.data").read_bytes() == b"the user's weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_an_onnx_file_with_its_weights_beside_it_moves_in_whole_and_runs(
    tmp_path: Path, small_program: tuple[nn.Module, torch.export.ExportedProgram], monkeypatch: pytest.MonkeyPatch
) -> None:
    import zoo.services.export as export

    monkeypatch.setattr(export, "ONNX_INLINE_LIMIT", 0)  # as a model past protobuf's 2 GiB is written
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an older export")
    model, program = small_program
    assert save_onnx(program, out) == out
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2
    assert files[0] == "m.onnx"
    assert not files[1].startswith(".")  # the weights under their own name; no temp left
    assert (tmp_path / files[1]).stat().st_size > out.stat().st_size  # the weights are in the second file
    x = images(1, 64, 64)
    assert_matches(run_onnx(out, x), eager(model, x))  # the model file finds its weights under their final name
