"""zoo.archs.fuse_kernels: a layer and its activation (or an unfolded batch norm) as one oneDNN call, where that
computes the same, and nowhere else; and spatial_mean, the 16-bit channels_last fast path of a global mean."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.fx
from torch import nn

import zoo
from model_checks import images
from zoo.archs.fuse_kernels import ConvAct, LinearAct, fuse_kernels, kernels_available, post_op
from zoo.archs.layers.norm_act import BatchNormAct2d
from zoo.archs.layers.pool import spatial_mean

pytestmark = pytest.mark.skipif(not kernels_available(), reason="this torch build has no oneDNN pointwise kernels")

ACTS: list[Callable[[], nn.Module]] = [
    nn.ReLU,
    nn.SiLU,
    nn.GELU,
    lambda: nn.GELU(approximate="tanh"),
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.ReLU6,
    lambda: nn.LeakyReLU(0.2),
]


@pytest.mark.parametrize("make_act", ACTS)
def test_each_post_op_computes_its_activation(make_act: Callable[[], nn.Module]) -> None:
    torch.manual_seed(0)
    act = make_act()
    op = post_op(act)
    assert op is not None
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1).eval()
    linear = nn.Linear(8, 12).eval()
    x = torch.randn(2, 8, 9, 9) * 3
    tokens = torch.randn(2, 5, 8) * 3
    with torch.no_grad():
        want_conv, want_linear = act(conv(x)), act(linear(tokens))
    fused_conv, fused_linear = ConvAct(conv, act, op), LinearAct(linear, act, op)
    with torch.inference_mode():  # the oneDNN kernels
        torch.testing.assert_close(fused_conv(x), want_conv, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused_linear(tokens), want_linear, rtol=1e-5, atol=1e-5)
        low = copy.deepcopy(fused_conv).to(torch.bfloat16)(x.bfloat16()).float()
        assert float((low - want_conv).abs().max()) <= 0.05 * float(want_conv.abs().max())
    # with a gradient wanted, the plain layers (the kernels have none)
    out = fused_conv(x)
    out.sum().backward()
    assert conv.weight.grad is not None
    torch.testing.assert_close(out.detach(), want_conv, rtol=1e-5, atol=1e-5)


def test_an_activation_oneDNN_lacks_has_no_post_op() -> None:
    class MyReLU(nn.ReLU):  # a subclass may compute something else
        pass

    assert post_op(nn.Mish()) is None
    assert post_op(MyReLU()) is None
    assert post_op(nn.GELU()) == post_op(nn.GELU(approximate="none"))
    assert post_op(nn.GELU(approximate="tanh")) != post_op(nn.GELU())  # the approximation is its own post-op


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(0.0)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.SiLU()
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.act3 = nn.GELU()
        self.mish = nn.Mish()
        self.norm = BatchNormAct2d(8, act_layer="relu")
        self.fc = nn.Linear(8, 4)
        self.fc_nobias = nn.Linear(4, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.drop(self.conv1(x)))  # fuses through the dropout
        y = self.conv2(x)
        x = self.act2(y) + y  # y is used twice: conv2 keeps its own output
        x = self.mish(self.conv3(x))  # no post-op for Mish
        x = self.norm(x)  # an unfolded batch norm: a depthwise 1x1 ConvAct
        out: torch.Tensor = self.fc_nobias(self.fc(x.mean((2, 3))))  # fc: its bias alone; fc_nobias: nothing
        return out


def test_fuses_exactly_where_the_output_goes_to_one_activation_and_nowhere_else() -> None:
    torch.manual_seed(0)
    model = _Block().eval()
    model.norm.get_buffer("running_mean").uniform_(-1, 1)
    model.norm.get_buffer("running_var").uniform_(0.5, 2)
    x = images(2, 16, 16)
    with torch.no_grad():
        want = model(x)
    keys = set(model.state_dict())
    assert fuse_kernels(model) == 3  # conv1 + act1, fc's bias, the norm
    assert isinstance(model.conv1, ConvAct)
    assert model.conv1.op.attr == "relu"
    assert isinstance(model.act1, nn.Identity)
    assert type(model.conv2) is nn.Conv2d
    assert type(model.act2) is nn.SiLU
    assert type(model.conv3) is nn.Conv2d
    assert isinstance(model.norm, ConvAct)
    assert model.norm.groups == 8
    assert model.norm.op.attr == "relu"
    assert isinstance(model.fc, LinearAct)
    assert model.fc.op.attr == "none"
    assert type(model.fc_nobias) is nn.Linear
    # the layers' parameters keep their names; only the norm's statistics became its convolution's terms
    assert {k for k in keys if not k.startswith("norm.")} <= set(model.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)
    # a traced copy records the plain layers and computes the same
    torch.testing.assert_close(torch.fx.symbolic_trace(model)(x).detach(), want, rtol=1e-5, atol=1e-5)


def test_hooks_and_taps_between_a_layer_and_its_activation_keep_the_pair() -> None:
    hooked = _Block().eval()
    hooked.act1.register_forward_hook(lambda *_: None)
    fuse_kernels(hooked)
    assert type(hooked.conv1) is nn.Conv2d
    assert type(hooked.act1) is nn.ReLU

    # resnet18 extractor tapping 'act1' fuses conv1 into it (the tap sees the activation's output either way)
    torch.manual_seed(0)
    extractor = zoo.create_model("resnet18", features_only=True, out_indices=(0, 1)).eval()
    x = images(2, 64, 64)
    with torch.no_grad():
        want = extractor(x)
    copy = zoo.fuse_for_inference(extractor)
    assert fuse_kernels(copy) > 0
    with torch.inference_mode():
        for got, ref in zip(copy(x), want, strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_a_model_fx_cannot_trace_still_has_its_norms_swapped() -> None:
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.ReLU()
            self.norm = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent: torch.fx cannot trace it
                x = -x
            out: torch.Tensor = self.norm(self.act(self.conv(x)))
            return out

    model = Dynamic().eval()
    assert fuse_kernels(model) == 1
    assert type(model.conv) is nn.Conv2d
    assert isinstance(model.norm, ConvAct)
    assert model.norm.op.attr == "none"


def test_spatial_mean_is_mean_and_takes_the_fast_path_only_for_16_bit_channels_last() -> None:
    x = torch.randn(2, 16, 12, 10)
    assert torch.equal(spatial_mean(x), x.mean((2, 3), keepdim=True))  # float32: mean itself
    low = x.bfloat16().contiguous(memory_format=torch.channels_last)
    got = spatial_mean(low)
    assert got.shape == (2, 16, 1, 1)
    torch.testing.assert_close(got.float(), low.float().mean((2, 3), keepdim=True), rtol=1e-2, atol=1e-2)

    class Pool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = spatial_mean(x)
            return out

    graph = torch.fx.symbolic_trace(Pool()).graph
    assert [n.target for n in graph.nodes if n.op == "call_method"] == ["mean"]  # one op in a traced graph


@pytest.mark.parametrize("feature_cls", ["list", "dict", "hook", "getter"])
def test_every_kind_of_feature_extractor_computes_the_same_fused(feature_cls: str) -> None:
    torch.manual_seed(0)
    extractor = zoo.create_model("resnet18", features_only=True, out_indices=(0, 2, 4), feature_cls=feature_cls)
    extractor.eval()
    x = images(2, 64, 64)
    with torch.no_grad():
        want = extractor(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a hook extractor's norms stay unfolded, and say so
        fast = zoo.optimize_for_inference(extractor, dtype="float32", check=False)
    assert fast.plan.fused_kernels > 0
    got = fast(x)
    pairs = zip(got.values(), want.values(), strict=True) if isinstance(want, dict) else zip(got, want, strict=True)
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
