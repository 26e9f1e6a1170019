"""Issue 19: export keeps the caller's mode and a dynamic ViT's size, fusing keeps hooks and folds synced norms,
pruning probes at the model's own size and refuses absurd widths, numpy integers pass, create_model under dynamo."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from model_checks import images
from zoo.domain.errors import ExportFailedError
from zoo.services.export import export_file, export_program, input_dims

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small forwards on one torch thread


# -- 1. export_file leaves the caller's train/eval mode -----------------------------------------


def _conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())


def test_export_file_restores_each_modules_mode(tmp_path: Path) -> None:
    model = _conv_bn().train()
    model[1].eval()  # a frozen norm inside a model in training: both flags come back as they were
    export_file(model, tmp_path / "m.pt2", fmt="pt2", example=images(2, 64, 64))
    assert [m.training for m in model.modules()] == [True, True, False, True]


class _Refuses(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this model cannot be traced")


def test_export_file_restores_the_mode_when_the_export_fails(tmp_path: Path) -> None:
    model = nn.Sequential(_conv_bn(), _Refuses()).train()
    with pytest.raises(ExportFailedError):
        export_file(model, tmp_path / "m.pt2", fmt="pt2", example=images(2, 64, 64))
    assert all(m.training for m in model.modules())
    assert not (tmp_path / "m.pt2").exists()


# -- 2. a ViT with dynamic_img_size exported from its own 224 px keeps height and width dynamic -------------------


@pytest.fixture(scope="module")
def dynamic_vit() -> nn.Module:
    torch.manual_seed(0)
    model = zoo.create_model(
        "vit_tiny_patch16_224", depth=1, embed_dim=32, num_heads=2, num_classes=5, dynamic_img_size=True
    )
    return model.eval()


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_dynamic_vit_exported_at_224_runs_at_other_sizes(dynamic_vit: nn.Module, fmt: str, tmp_path: Path) -> None:
    out = tmp_path / f"vit.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback to a fixed size
        _, program = export_file(dynamic_vit, out, fmt=fmt)  # the example: 2 images of the cfg's 224x224
    assert input_dims(program)[2:] == [("height", 32, None), ("width", 32, None)]
    for size in ((96, 160), (224, 224)):  # another grid, and the grid the position embeddings were made for
        x = images(3, *size)
        with torch.no_grad():
            expected = dynamic_vit(x)
        if fmt == "pt2":
            got = torch.export.load(out).module()(x)
        else:
            ort = pytest.importorskip("onnxruntime")
            session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            (image,) = session.get_inputs()
            got = torch.from_numpy(session.run(None, {image.name: x.numpy()})[0])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_dynamic_vit_exported_at_a_small_size_runs_at_224(dynamic_vit: nn.Module) -> None:
    # exported from another grid, the program used to assert the grid was never the one the embeddings were made for
    program = export_program(dynamic_vit, images(2, 64, 64))
    x = images(2, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), dynamic_vit(x), rtol=1e-4, atol=1e-4)
