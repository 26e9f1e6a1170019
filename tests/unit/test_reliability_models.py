"""Issue 19: export keeps the caller's mode and a dynamic ViT's size, fusing keeps hooks and folds synced norms,
pruning probes at the model's own size and refuses absurd widths, numpy integers pass, create_model under dynamo."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch
from torch import nn

import zoo
import zoo.services.pruner.apply as pruner_apply
from model_checks import images
from zoo.api import ModelZoo
from zoo.archs.fuse import FoldedNorm
from zoo.archs.layers.norm_act import BatchNormAct2d, InPlaceAbn2d
from zoo.archs.layers.sync_norm import SyncBatchNormAct, SyncInPlaceAbn
from zoo.archs.resnet import BasicBlock, ResNet
from zoo.domain.checks import check_choice
from zoo.domain.errors import ExportFailedError, InvalidValueError, PruneSpecError
from zoo.domain.prune import SEPARATOR, PruneSpec, parse_prune_spec
from zoo.services.export import export_file, export_program, input_dims
from zoo.services.pruner import ChannelPruner

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small forwards on one torch thread

M = TypeVar("M", bound=nn.Module)


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


# -- 3. fuse_for_inference keeps hooks (the pair they sit on stays unfolded) and names them ----------------------


def _trained_norms(model: M, seed: int = 0) -> M:
    """model (in place, in eval) with norms holding statistics and affine values unlike the init's 0/1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, InPlaceAbn2d)):
                n = m.get_buffer("running_mean").numel()
                m.get_buffer("running_mean").copy_(torch.randn(n, generator=g) * 0.2)
                m.get_buffer("running_var").copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.get_parameter("weight").copy_(torch.rand(n, generator=g) + 0.5)
                m.get_parameter("bias").copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


class _Recorder:
    """A hook recording what it sees (the first argument or the output), by call."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def pre(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.seen.append(args[0].detach().clone())

    def post(self, module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        self.seen.append(out.detach().clone())


def _two_conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    return _trained_norms(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5))
    )


def test_fuse_keeps_hooks_on_norms_and_convs_and_names_them() -> None:
    model = _two_conv_bn()
    on_norm, on_conv = _Recorder(), _Recorder()
    model[1].register_forward_hook(on_norm.post)
    model[3].register_forward_pre_hook(on_conv.pre)
    x = images(2, 16, 16)
    with torch.no_grad():
        expected = model(x)
    with pytest.warns(UserWarning, match=r"2 batch norm\(s\) left unfolded to keep the hooks.*") as caught:
        fused = zoo.fuse_for_inference(model)
    message = str(caught[0].message)
    assert "forward hook _Recorder.post on '1'" in message
    assert "forward pre-hook _Recorder.pre on '3'" in message
    # the hooked pairs stay: the copy's hooks fire and see what the model's saw
    assert isinstance(fused[1], nn.BatchNorm2d)
    assert isinstance(fused[4], nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected)
    assert len(on_norm.seen) == len(on_conv.seen) == 2  # once in the model, once in the copy
    torch.testing.assert_close(on_norm.seen[1], on_norm.seen[0])
    torch.testing.assert_close(on_conv.seen[1], on_conv.seen[0])
    with pytest.raises(InvalidValueError, match=r"strict=True.*forward hook _Recorder\.post on '1'"):
        zoo.fuse_for_inference(model, strict=True)


def test_fuse_still_folds_the_pairs_without_hooks() -> None:
    model = _two_conv_bn()
    seen = _Recorder()
    model[4].register_forward_hook(seen.post)
    with pytest.warns(UserWarning, match=r"1 batch norm\(s\) left unfolded to keep the hooks.*'4'"):
        fused = zoo.fuse_for_inference(model)
    assert isinstance(fused[1], FoldedNorm)
    assert isinstance(fused[4], nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(fused(images(2, 16, 16)), model(images(2, 16, 16)), rtol=1e-5, atol=1e-5)
    assert len(seen.seen) == 2


# -- 7. synchronised batch norms fold as the batch norms they are in eval -----------------------------------------


def test_fuse_folds_convert_sync_batchnorms(r18: ResNet) -> None:
    model = _trained_norms(copy.deepcopy(r18))
    x = images(2, 64, 64)
    with torch.no_grad():
        expected = model(x)
    zoo.convert_sync_batchnorm(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every norm folds: nothing left to name
        fused = zoo.fuse_for_inference(model)
    assert not [m for m in fused.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


def test_fuse_folds_synced_norm_act_modules_and_torchs_sync_batchnorm() -> None:
    torch.manual_seed(0)
    model = _trained_norms(
        nn.Sequential(
            nn.Conv2d(3, 4, 3),
            BatchNormAct2d(4, act_layer="relu"),
            nn.Conv2d(4, 4, 3),
            InPlaceAbn2d(4),
            nn.Conv2d(4, 4, 3),
            nn.BatchNorm2d(4),
        )
    )
    x = images(2, 16, 16)
    zoo.convert_sync_batchnorm(model)
    model[5] = _trained_norms(nn.Sequential(nn.SyncBatchNorm(4)))[0]  # torch's own, as its converter makes
    assert [type(model[i]) for i in (1, 3, 5)] == [SyncBatchNormAct, SyncInPlaceAbn, nn.SyncBatchNorm]
    with torch.no_grad():
        expected = model(x)
    fused = zoo.fuse_for_inference(model)
    assert all(isinstance(fused[i], FoldedNorm) for i in (1, 3, 5))
    assert isinstance(fused[1].act, nn.ReLU)
    assert isinstance(fused[3].act, nn.LeakyReLU)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


# -- 4. a ViT built for another image size is pruned (the probe runs at its own size) ------------------------------

_VIT_MLP = "blocks.0.mlp.fc1.weight:[50, 32]***blocks.0.mlp.fc1.bias:[50]***blocks.0.mlp.fc2.weight:[32, 50]"


def test_a_vit_built_for_another_size_takes_a_prune_spec() -> None:
    model = zoo.create_model(
        "vit_tiny_patch16_224",
        depth=1,
        embed_dim=32,
        num_heads=2,
        num_classes=5,
        img_size=(64, 96),
        prune_spec=_VIT_MLP,
    )
    fc1 = model.get_submodule("blocks.0.mlp.fc1")
    assert isinstance(fc1, nn.Linear)
    assert (fc1.in_features, fc1.out_features) == (32, 50)
    with torch.no_grad():
        assert model(images(2, 64, 96)).shape == (2, 5)


def test_the_pruner_probes_a_built_vit_at_its_own_size() -> None:
    torch.manual_seed(0)
    model = zoo.create_model("vit_tiny_patch16_224", depth=1, embed_dim=32, num_heads=2, num_classes=5, img_size=96)
    ChannelPruner().apply(model, _VIT_MLP)
    assert model.get_submodule("blocks.0.mlp.fc2").weight.shape == (32, 50)
    with torch.no_grad():
        assert model(images(1, 96, 96)).shape == (1, 5)


# -- 5. absurd widths are refused as PruneSpecError naming the entry and the valid range -------------------------


@pytest.mark.parametrize("width", ["9" * 5000, str(10**13)])
def test_a_width_past_any_layers_is_refused_when_parsed(width: str) -> None:
    text = f"conv1.weight:[64, 3, 7, 7]***layer1.0.conv1.weight:[{width}, 64, 3, 3]"
    with pytest.raises(PruneSpecError, match=r"entry 'layer1\.0\.conv1\.weight'.*expected ints in \[1, 2147483647\]"):
        parse_prune_spec(text)
    with pytest.raises(PruneSpecError, match=r"'layer1\.0\.conv1\.weight'.*\[1, 2147483647\]"):
        zoo.create_model("resnet18", prune_spec=text)
    with pytest.raises(PruneSpecError, match=r"'a\.weight'.*at most 2147483647"):
        PruneSpec({"a.weight": (10**13,)})


def test_a_width_past_the_layers_own_is_refused_and_the_model_untouched(r18: ResNet) -> None:
    model = copy.deepcopy(r18)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wide = 2**31 - 1  # parses, but no resnet18 layer has that many channels
    text = SEPARATOR.join(
        [
            f"layer1.0.conv1.weight:[{wide}, 64, 3, 3]",
            f"layer1.0.bn1.weight:[{wide}]",
            f"layer1.0.conv2.weight:[64, {wide}, 3, 3]",
        ]
    )
    with pytest.raises(
        PruneSpecError, match=r"'layer1\.0\.conv1\.weight' gives 2147483647 output channels: expected 1 to 64"
    ):
        ChannelPruner().apply(model, text)
    with pytest.raises(PruneSpecError, match=r"'layer1\.0\.bn1\.bias' gives 65 output channels: expected 1 to 64"):
        ChannelPruner().apply(model, "layer1.0.bn1.bias:[65]")
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_layer_that_fails_to_build_leaves_every_layer_as_it_was(r18: ResNet, monkeypatch: pytest.MonkeyPatch) -> None:
    model = copy.deepcopy(r18)
    layers = dict(model.named_modules())
    built: list[nn.Module] = []
    real = pruner_apply._build_real

    def fail_second(old: nn.Module, factory: Callable[[], nn.Module]) -> nn.Module:
        if built:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        built.append(real(old, factory))
        return built[-1]

    monkeypatch.setattr(pruner_apply, "_build_real", fail_second)
    with pytest.raises(RuntimeError, match="allocate"):
        ChannelPruner().apply(
            model,
            "layer1.0.conv1.weight:[32, 64, 3, 3]***layer1.0.bn1.weight:[32]***layer1.0.conv2.weight:[64, 32, 3, 3]",
        )
    assert all(m is layers[path] for path, m in model.named_modules())


# -- 6. a prune error names the user's layer class and the entries to change, not an internal stand-in ----------


def test_a_width_conflict_names_the_norm_class_and_the_entries(r18: ResNet) -> None:
    with pytest.raises(PruneSpecError) as caught:
        ChannelPruner().apply(copy.deepcopy(r18), "conv1.weight:[32, 3, 7, 7]")
    message = str(caught.value)
    assert "_NormWidth" not in message
    assert "layer 'bn1' (BatchNorm2d): it takes 64 channels but receives 32 from 'conv1'" in message
    assert "(bn1.weight and conv1.weight)" in message


# -- 8. numpy integers pass every integer keyword, and are kept as plain ints ------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "cspdarknet53", "convnext_tiny", "xception41", "regnetx_016"])
def test_output_stride_takes_a_numpy_integer(name: str) -> None:
    with torch.device("meta"):
        model = zoo.create_model(name, output_stride=np.int64(16), num_classes=np.int32(7))
    assert max(t.reduction for t in model.feature_info) == 16
    args = model.build_record.model_args
    assert (args["output_stride"], args["num_classes"]) == (16, 7)
    assert type(args["output_stride"]) is int
    assert type(args["num_classes"]) is int


def test_numpy_integers_in_sequences_reach_the_constructor_as_plain_ints() -> None:
    with torch.device("meta"):
        model = zoo.create_model("densenet121", block_config=(np.int64(1), np.int16(2), 1, 1), growth_rate=np.uint8(8))
    config = model.build_record.model_args["block_config"]
    assert config == (1, 2, 1, 1)
    assert isinstance(config, tuple)
    assert all(type(v) is int for v in config)
    assert type(model.build_record.model_args["growth_rate"]) is int


def test_check_choice_matches_any_integer_to_an_int_choice() -> None:
    assert check_choice("output_stride", np.int64(8), (8, 16, 32)) == 8
    assert type(check_choice("output_stride", np.int64(8), (8, 16, 32))) is int
    with pytest.raises(InvalidValueError, match=r"output_stride=np\.int64\(12\) is invalid: expected one of 8, 16, 32"):
        check_choice("output_stride", np.int64(12), (8, 16, 32))
    with pytest.raises(InvalidValueError, match="output_stride=True is invalid"):
        check_choice("output_stride", True, (1, 8))  # a bool is not an integer here
    with pytest.raises(InvalidValueError, match=r"output_stride=8\.0 is invalid"):
        check_choice("output_stride", 8.0, (8, 16, 32))
    numpy_stride: dict[str, Any] = {"output_stride": np.int64(8)}  # not the Literal the signature names
    with torch.device("meta"):
        model = ResNet(block=BasicBlock, layers=(1, 1, 1, 1), **numpy_stride)  # the constructor itself, directly
    assert model.feature_info[-1].reduction == 8


# -- 9. create_model called from code torch.compile traces builds the model, as it does outside ------------------


def test_create_model_under_torch_compile_builds_what_it_builds_eagerly() -> None:
    app = ModelZoo()  # its families not loaded yet: dynamo would meet the catalogue's attrs values first
    torch._dynamo.reset()
    try:
        torch.manual_seed(0)
        from_app = torch.compile(lambda: app.create_model("resnet18", num_classes=3))()
        torch.manual_seed(0)
        from_facade = torch.compile(lambda: zoo.create_model("resnet18", num_classes=3))()
    finally:
        torch._dynamo.reset()
    torch.manual_seed(0)
    expected = zoo.create_model("resnet18", num_classes=3).state_dict()
    for model in (from_app, from_facade):
        assert isinstance(model, ResNet)
        got = model.state_dict()
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
