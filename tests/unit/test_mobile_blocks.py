"""The blocks the wider EfficientNet family needs: mixed kernels, CondConv, global context, space to depth."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from model_checks import check_script_and_fx, small_model
from zoo.archs.efficientnet import EfficientNet
from zoo.archs.layers.block_string import decode_stages
from zoo.archs.layers.cond_conv import CondConv2d
from zoo.archs.layers.global_context import GlobalContext
from zoo.archs.layers.mbconv import BlockDef, DepthwiseSeparable
from zoo.archs.layers.mixed_conv import MixedConv2d, block_conv, split_channels


def test_channel_splits_put_the_remainder_first() -> None:
    assert split_channels(10, 3) == [4, 3, 3]
    assert split_channels(8, 2) == [4, 4]


def test_mixed_conv_convolves_each_group_with_its_kernel() -> None:
    torch.manual_seed(0)
    conv = block_conv(10, 10, (3, 5, 7), 2, groups=10)
    assert isinstance(conv, MixedConv2d)
    convs = [c for c in conv if isinstance(c, nn.Conv2d)]
    assert [(c.kernel_size, c.groups) for c in convs] == [((3, 3), 4), ((5, 5), 3), ((7, 7), 3)]
    x = torch.randn(2, 10, 9, 9)
    parts = torch.split(x, [4, 3, 3], 1)
    expected = torch.cat(
        [F.conv2d(p, c.weight, None, 2, c.padding, 1, c.groups) for p, c in zip(parts, convs, strict=True)], 1
    )
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)
    assert type(block_conv(4, 8, (1,))) is nn.Conv2d  # one kernel: a plain conv


def test_condconv_gives_each_sample_its_own_mix_of_experts() -> None:
    torch.manual_seed(0)
    conv = CondConv2d(4, 6, 3, 2, num_experts=3, same_pad=True)
    x, routing = torch.randn(2, 4, 9, 9), torch.rand(2, 3)
    out = conv(x, routing)
    for i in range(2):
        kernel = (routing[i] @ conv.weight).reshape(6, 4, 3, 3)
        alone = F.conv2d(F.pad(x[i : i + 1], [1, 1, 1, 1]), kernel, None, 2)
        torch.testing.assert_close(out[i : i + 1], alone)
    assert out.shape == (2, 6, 5, 5)


def test_global_context_gates_channels_by_attention_pooled_context() -> None:
    torch.manual_seed(0)
    gc = GlobalContext(8, 2, "silu").eval()
    x = torch.randn(2, 8, 5, 5)
    weights = torch.softmax(gc.conv_attn(x).flatten(2), -1)  # (2, 1, 25)
    context = (x.flatten(2) * weights).sum(-1)[..., None, None]
    torch.testing.assert_close(gc(x), x * torch.sigmoid(gc.mlp_scale(context)))
    assert [k for k, _ in gc.state_dict().items() if k.startswith("mlp_scale.norm")] == [
        "mlp_scale.norm.weight",
        "mlp_scale.norm.bias",
    ]


def test_space_to_depth_folds_space_then_works_at_four_times_the_widths() -> None:
    stages = decode_stages((("ds_r2_k3_s1_e1_c8_se0.25_d1",), ("er_r1_k3_s2_e6_c16_se0.25",), ("ir_r1_k3_s2_e6_c16",)))
    model = small_model(EfficientNet, {"stages": stages, "stem_size": 8, "num_features": 32, "num_classes": 5}, {})
    first = model.get_submodule("blocks.0.0")
    assert isinstance(first, DepthwiseSeparable)
    assert isinstance(first.conv_s2d, nn.Conv2d)
    assert first.get_parameter("conv_s2d.weight").shape == (32, 8, 2, 2)
    assert first.get_parameter("conv_dw.weight").shape == (32, 1, 2, 2)
    assert first.get_parameter("conv_pw.weight").shape == (32, 32, 1, 1)  # 8 output channels, times 4
    # the next strided block does not stride: it expands 6 / 4 times from the folded 32 channels
    assert model.get_parameter("blocks.1.0.conv_exp.weight").shape == (48, 32, 3, 3)
    taps = [(t.module, t.num_chs, t.reduction) for t in model.feature_info]
    assert taps == [("bn1", 8, 2), ("blocks.1", 16, 4), ("blocks.2", 16, 8)]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        maps = model.eval().forward_intermediates(x, intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(1, 8, 16, 16), (1, 16, 8, 8), (1, 16, 4, 4)]
    check_script_and_fx(model, torch.randn(1, 3, 37, 37))


@pytest.mark.parametrize("stages", [(("ir_r1_k3_s1_e6_c8_cc4",), ("ir_r1_k3_s2_e6_c8_se0.25_cc4",))])
def test_condconv_and_gc_models_script_and_trace(stages: tuple[tuple[str, ...], ...]) -> None:
    for se_layer in ("se", "gc"):
        model = small_model(
            EfficientNet,
            {"stages": decode_stages(stages), "stem_size": 8, "num_features": 16, "num_classes": 5},
            {"se_layer": se_layer, "same_pad": True},
        )
        check_script_and_fx(model, torch.randn(2, 3, 37, 37))


def test_space_to_depth_is_for_depthwise_separable_blocks_only() -> None:
    with pytest.raises(zoo.ZooError, match="s2d"):
        BlockDef("ir", 1, 3, 1, 8, exp_ratio=6, s2d=True)
    with pytest.raises(zoo.ZooError, match="se_layer"):
        small_model(EfficientNet, {"stages": decode_stages((("ds_r1_k3_s1_c8",),))}, {"se_layer": "eca"})


# -- output_stride: dilation instead of striding, in every block kind -----------------------------------------

# a name per block kind that can dilate: ds/ir, TF 'same' padding, mixed kernels, CondConv, fused 'er', global
# context, MobileNetV3's head, MobileNetV4's universal inverted residuals and its attention's strided keys
DILATING = (
    "efficientnet_b0",
    "tf_efficientnet_b0",
    "mixnet_s",
    "tf_efficientnet_cc_b0_4e",
    "efficientnetv2_rw_t",
    "gc_efficientnetv2_rw_t",
    "mobilenetv3_large_100",
    "mobilenetv4_conv_small",
    "mobilenetv4_hybrid_medium",
)


def _dilations(model: nn.Module) -> set[int]:
    found: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.Conv2d | CondConv2d):
            found.add(int(m.dilation[0]))
    return found


@pytest.mark.parametrize("name", DILATING)
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_dilates_instead_of_striding(name: str, output_stride: int) -> None:
    with torch.device("meta"):
        plain = zoo.create_model(name)
        dense = zoo.create_model(name, output_stride=output_stride)
    # the same weights (a published checkpoint loads), the taps' strides capped at output_stride
    assert {k: v.shape for k, v in dense.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert [t.reduction for t in dense.feature_info] == [min(t.reduction, output_stride) for t in plain.feature_info]
    assert _dilations(plain) == {1}
    assert max(_dilations(dense)) == 32 // output_stride
    x = torch.randn(1, 3, 64, 48, device="meta")
    maps = dense.forward_intermediates(x, intermediates_only=True)
    expect = [(-(-64 // t.reduction), -(-48 // t.reduction)) for t in dense.feature_info]
    assert [tuple(m.shape[-2:]) for m in maps] == expect


def test_a_dilated_model_runs_and_matches_its_strided_self_where_they_agree() -> None:
    # before the first dilated block both models compute the same maps; the dense one's last map is 2x larger
    torch.manual_seed(0)
    plain = zoo.create_model("mobilenetv3_large_100").eval()
    dense = zoo.create_model("mobilenetv3_large_100", output_stride=16).eval()
    dense.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = plain.forward_intermediates(x, intermediates_only=True)
        b = dense.forward_intermediates(x, intermediates_only=True)
        logits = dense(x)
    for p, d in zip(a[:-1], b[:-1], strict=True):
        torch.testing.assert_close(p, d)
    assert a[-1].shape[-1] * 2 == b[-1].shape[-1]
    assert logits.shape == (1, 1000)
    assert bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenetv3_large_100"])
def test_an_output_stride_it_cannot_keep_is_refused_by_name(name: str) -> None:
    with pytest.raises(zoo.ZooError, match=r"output_stride=4 .*8, 16, 32"):
        zoo.create_model(name, output_stride=4)
