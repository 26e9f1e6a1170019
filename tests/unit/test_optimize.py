"""zoo.optimize_for_inference: the choices it makes (and records), the accuracy guard, and what it leaves alone."""

from __future__ import annotations

import warnings

import pytest
import torch

import zoo
import zoo.inference as inference
from model_checks import images
from zoo.archs.fuse_kernels import ConvAct, kernels_available
from zoo.inference import OptimizedModel


def _quiet(model: torch.nn.Module, **kwargs: object) -> OptimizedModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return zoo.optimize_for_inference(model, **kwargs)  # type: ignore[arg-type]  # keywords as the test gives them


def test_auto_precision_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(inference, "_cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert inference.native_low_precision(cpu) == ("bfloat16", "the CPU has amx_bf16")
    monkeypatch.setattr(inference, "_cpu_flags", lambda: frozenset({"avx2"}))
    dtype, reason = inference.native_low_precision(cpu)
    assert dtype == "float32"
    assert "neither AVX512-BF16 nor AMX" in reason
    model = zoo.create_model("resnet18", num_classes=10)
    opt = _quiet(model, example=images(2, 64, 64))
    assert opt.plan.dtype == "float32"
    assert opt.plan.dtype_reason == reason
    assert next(opt.module.parameters()).dtype == torch.float32


def test_a_conv_net_runs_channels_last_with_its_norms_folded_and_a_token_model_stays_contiguous() -> None:
    conv = _quiet(zoo.create_model("resnet18", num_classes=10), dtype="bfloat16", example=images(2, 64, 64))
    assert conv.plan.memory_format == "channels_last"
    assert conv.plan.folded_norms == 20  # every batch norm of resnet18 follows a conv of its own
    assert conv.plan.unfolded_note == ""
    # with oneDNN (any x86 build of torch): the stem's and each block's first conv + ReLU (the second ReLU
    # follows the residual add) and fc's bias
    assert conv.plan.fused_kernels == (1 + 8 + 1 if kernels_available() else 0)
    assert isinstance(conv.module.get_submodule("conv1"), ConvAct if kernels_available() else torch.nn.Conv2d)
    assert conv.plan.summary() == f"bfloat16, channels_last, 20 norms folded, {conv.plan.fused_kernels} fused kernels"
    weight = conv.module.get_submodule("conv1").weight
    assert isinstance(weight, torch.Tensor)
    assert weight.dtype == torch.bfloat16
    assert weight.is_contiguous(memory_format=torch.channels_last)
    vit = _quiet(zoo.create_model("test_vit", num_classes=10), dtype="float32", example=images(2, 160, 160))
    assert vit.plan.memory_format == "contiguous"
    assert vit.plan.folded_norms == 0


def test_callers_pass_and_get_float32_nchw_and_the_original_is_untouched() -> None:
    torch.manual_seed(0)
    model = zoo.create_model("resnet18", num_classes=10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = _quiet(model, dtype="bfloat16", example=images(4, 64, 64))
    assert model.training
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = images(2, 64, 64)
    out = opt(x)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    assert out.shape == (2, 10)
    with torch.no_grad():
        expected = model.eval()(x)
    assert float((out - expected).abs().max() / expected.abs().max()) < inference.ACCURACY_TOLERANCE["bfloat16"]
    # the copy's own surface, converted the same way, and its attributes
    taps = opt.forward_intermediates(x, intermediates_only=True)
    assert isinstance(taps, list)
    assert all(t.dtype == torch.float32 for t in taps)
    assert [t.shape[1] for t in taps] == [i.num_chs for i in opt.feature_info]
    assert opt.num_classes == 10


def test_the_guard_reports_the_figures_and_warns_past_the_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = zoo.create_model("resnet18", num_classes=10).eval()
    x = images(4, 64, 64)
    exact = zoo.optimize_for_inference(model, dtype="float32", example=x)
    assert exact.accuracy is not None
    assert exact.accuracy.within_tolerance
    assert exact.accuracy.max_rel_error < 1e-5
    assert exact.accuracy.top1_agreement == 1.0
    monkeypatch.setitem(inference.ACCURACY_TOLERANCE, "bfloat16", 0.0)
    with pytest.warns(
        UserWarning, match=r"ResNet in bfloat16 differs from float32 eager by [0-9.]+% relative on a batch of 4"
    ):
        low = zoo.optimize_for_inference(model, dtype="bfloat16", example=x)
    assert low.accuracy is not None
    assert not low.accuracy.within_tolerance
    with torch.no_grad():
        expected = model(x)
    got = low(x)
    assert isinstance(got, torch.Tensor)
    independent = float((got - expected).abs().max() / expected.abs().max())
    assert low.accuracy.max_rel_error == pytest.approx(independent)
    assert low.accuracy.batch == 4


def test_a_feature_extractor_is_optimised_too() -> None:
    torch.manual_seed(0)
    extractor = zoo.create_model("resnet18", features_only=True, out_indices=(1, 3)).eval()
    opt = _quiet(extractor, dtype="float32", example=images(2, 64, 64))
    assert opt.accuracy is not None
    assert opt.accuracy.top1_agreement is None
    assert opt.accuracy.within_tolerance
    x = images(2, 64, 64)
    with torch.no_grad():
        want = extractor(x)
    got = opt(x)
    assert isinstance(got, list)
    assert len(got) == 2
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_an_optimised_copy_refuses_training() -> None:
    opt = _quiet(zoo.create_model("resnet18", num_classes=10), dtype="float32", check=False)
    assert opt.accuracy is None
    with pytest.raises(zoo.ZooError, match=r"train\(True\) is invalid on an OptimizedModel"):
        opt.train()
    opt.eval()  # train(False) is fine


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"dtype": "int8"}, "dtype='int8'"),
        ({"memory_format": "nhwc"}, "memory_format='nhwc'"),
        ({"compile": "yes"}, "compile"),
        ({"example": torch.zeros(3, 8, 8)}, "example=Tensor"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, object], named: str) -> None:
    model = zoo.create_model("resnet18", num_classes=10)
    with pytest.raises(zoo.ZooError, match=named):
        zoo.optimize_for_inference(model, **kwargs)  # type: ignore[arg-type]  # wrong on purpose


def test_compile_wraps_the_copy_and_calls_go_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    class Compiled(torch.nn.Module):
        # like torch.compile's wrapper: len() of a module that has none raises, so no truth test may touch it
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.inner = module

        def __len__(self) -> int:
            raise TypeError("no len()")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape[0])
            out: torch.Tensor = self.inner(x)
            return out

    monkeypatch.setattr(torch, "compile", Compiled)
    model = zoo.create_model("resnet18", num_classes=10).eval()
    opt = zoo.optimize_for_inference(model, dtype="float32", compile=True, example=images(2, 64, 64))
    assert opt.plan.compiled
    assert opt.plan.fused_kernels == 0  # inductor fuses for itself (and cannot lower unfrozen oneDNN kernels)
    assert calls == [2]  # the guard's forward ran through the compiled wrapper
    out = opt(images(3, 64, 64))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (3, 10)
    assert calls == [2, 3]
