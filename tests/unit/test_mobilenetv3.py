"""MobileNetV3-Large: reference taps, the conv head after pooling, SE gates, drop rates, checks, surface."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from model_checks import (
    check_grad_checkpointing,
    check_intermediates,
    check_prune,
    check_reference_taps,
    check_script_and_fx,
    images,
    meta_model,
    small_model,
)
from modelcache import built_as
from zoo.archs.layers.mbconv import BlockDef, DepthwiseSeparable, SqueezeExcite
from zoo.archs.mobilenetv3 import MobileNetV3

NAME = "mobilenetv3_large_100"
X = images()
SMALL_STAGES = (
    (BlockDef("ds", 1, 3, 1, 8, act="relu"),),
    (BlockDef("ir", 1, 3, 2, 16, exp_ratio=3, se_ratio=0.25, act="relu"), BlockDef("ir", 1, 5, 1, 16, exp_ratio=2.5)),
    (BlockDef("ir", 1, 3, 2, 24, exp_ratio=2, se_ratio=0.25),),
    (BlockDef("cn", 1, 1, 1, 48),),
)


def built() -> MobileNetV3:
    """The session's one build of the model (tests/modelcache.py)."""
    return built_as(NAME, MobileNetV3)


def small(**kwargs: object) -> MobileNetV3:
    """Short stages at small widths, ending in a 1x1 conv to 48, with a 64-wide head conv."""
    defaults = {"stages": SMALL_STAGES, "stem_size": 8, "head_size": 64, "num_classes": 5}
    return small_model(MobileNetV3, defaults, kwargs)


def test_feature_info_and_widths() -> None:
    model = meta_model(NAME, MobileNetV3)
    # the classifier reads conv_head's width, not the last stage's (as the reference reports both)
    check_reference_taps(model, NAME, head_hidden_size=1280)


def test_surface_forward_intermediates() -> None:
    check_intermediates(built(), X, later="blocks.3")


def test_surface_prune() -> None:
    check_prune(built(), X)


def test_se_gates_and_activations_follow_the_reference() -> None:
    model = built()
    gates = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert gates
    assert all(isinstance(m.gate, nn.Hardsigmoid) and isinstance(m.act1, nn.ReLU) for m in gates)
    # ReLU in the first three stages, hard-swish after
    acts = {s: {type(m) for m in model.blocks[s].modules() if isinstance(m, (nn.ReLU, nn.Hardswish))} for s in (1, 3)}
    assert acts == {1: {nn.ReLU}, 3: {nn.Hardswish}}
    assert isinstance(model.get_submodule("blocks.0.0"), DepthwiseSeparable)
    assert model.get_submodule("blocks.0.0").has_skip


def test_head_conv_after_pooling() -> None:
    model = small().eval()
    with torch.no_grad():
        feats = model.forward_features(X)
        assert feats.shape == (1, 48, 8, 8)
        pre = model.forward_head(feats, pre_logits=True)
        conv_head = model.conv_head
        assert isinstance(conv_head, nn.Conv2d)
        expected = nn.functional.hardswish(conv_head(feats.mean((2, 3), keepdim=True))).flatten(1)
        torch.testing.assert_close(pre, expected, rtol=0, atol=0)
    assert pre.shape == (1, model.head_hidden_size) == (1, 64)


def test_unpooled_head_returns_the_feature_map() -> None:
    model = small(num_classes=0, global_pool="").eval()
    assert model.head_hidden_size == model.num_features == 48
    with torch.no_grad():
        assert torch.equal(model(X), model.forward_features(X))


def test_a_classifier_after_pruning_reads_the_pooled_tap() -> None:
    model = small().eval()
    model.prune_intermediate_layers([0, 1])
    model.reset_classifier(3, "avg")
    assert model.head_hidden_size == model.num_features == 16
    with torch.no_grad():
        feats = model.forward_features(X)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean((2, 3)), rtol=0, atol=0)
        assert model(X).shape == (1, 3)


def test_catavgmax_pooling_widens_what_conv_head_reads() -> None:
    model = small(global_pool="catavgmax").eval()
    conv_head = model.conv_head
    assert isinstance(conv_head, nn.Conv2d)
    assert conv_head.in_channels == 96
    assert model.head_hidden_size == 64
    with torch.no_grad():
        assert model(X).shape == (1, 5)


def test_reset_to_a_wider_pooling_reinitialises_conv_head_with_a_warning() -> None:
    model = small().eval()
    old = model.conv_head
    with pytest.raises(zoo.ZooError, match="global_pool"):
        model.reset_classifier(3, "")
    assert model.conv_head is old  # refused: nothing changed
    model.reset_classifier(3)  # the same pooling keeps the trained head conv
    assert model.conv_head is old
    with pytest.warns(UserWarning, match="conv_head is re-initialised"):
        model.reset_classifier(3, "catavgmax")
    assert model.conv_head is not old
    assert model.head_hidden_size == 64
    with torch.no_grad():
        assert model(X).shape == (1, 3)


def test_dropout_comes_after_the_pre_logits() -> None:
    model = small(drop_rate=0.5).train()
    with torch.no_grad():
        feats = model.forward_features(X).detach()
        model.eval()
        pre = model.forward_head(feats, pre_logits=True)
        assert torch.equal(model.forward_head(feats), model.forward_head(feats))
        model.train()
        assert torch.equal(model.forward_head(feats, pre_logits=True), pre)
        torch.manual_seed(0)
        dropped = model.forward_head(feats)
    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Linear)
    assert not torch.allclose(dropped, classifier(pre))


def test_surface_script_and_fx() -> None:
    check_script_and_fx(small(drop_path_rate=0.1), X)


def test_grad_checkpointing_changes_nothing_but_memory() -> None:
    check_grad_checkpointing(small(), images(2))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"channel_multiplier": 10.0}, "channel_multiplier"),
        ({"stem_size": -1}, "stem_size"),
        ({"head_size": None}, "head_size"),
        ({"act_layer": "tanh"}, "act_layer"),
        ({"bn_eps": 1.0}, "bn_eps"),
        ({"drop_rate": -0.5}, "drop_rate"),
        ({"drop_path_rate": True}, "drop_path_rate"),
        ({"in_chans": 1.5}, "in_chans"),
        ({"num_classes": -1}, "num_classes"),
        ({"global_pool": "sum"}, "global_pool"),
        ({"stages": [[BlockDef("ir", 1, 3, 1, 8)], []]}, "stages"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        small(**kwargs)


def test_uir_and_mqa_strings_decode_to_their_fields() -> None:
    from zoo.archs.layers.block_string import decode_block

    extra_dw = decode_block("uir_r2_a3_k5_s2_e4_c80")
    assert (extra_dw.kind, extra_dw.exp_kernel, extra_dw.kernel, extra_dw.pw_kernel) == ("uir", (3,), (5,), (0,))
    ffn = decode_block("uir_r1_a0_k0_s1_e2_c160")
    assert (ffn.exp_kernel, ffn.kernel, ffn.pw_kernel, ffn.exp_ratio) == ((0,), (0,), (0,), 2.0)
    mqa = decode_block("mqa_r1_k3_h4_s1_v2_d64_c160")
    assert (mqa.kind, mqa.num_heads, mqa.key_dim, mqa.kv_stride, mqa.kernel) == ("mqa", 4, 64, 2, (3,))
    with pytest.raises(zoo.ZooError, match="'h' is missing"):
        decode_block("mqa_r1_k3_s1_d64_c160")
    with pytest.raises(zoo.ZooError, match="kernel"):
        BlockDef("ir", 1, 0, 1, 8)  # 0 (no conv) is a 'uir' kernel only


def test_universal_inverted_residual_forms() -> None:
    from zoo.archs.layers.uir import UniversalInvertedResidual

    model = zoo.create_model("mobilenetv4_conv_small", pretrained=False)
    first = model.get_submodule("blocks.2.0")  # ExtraDW: start and mid depthwise convs; the mid one strides
    assert isinstance(first, UniversalInvertedResidual)
    assert first.dw_start.conv.stride == (1, 1)
    assert first.dw_mid.conv.stride == (2, 2)
    assert not first.has_skip
    convnext = model.get_submodule("blocks.2.5")  # ConvNeXt-like: a start conv only, residual
    assert isinstance(convnext, UniversalInvertedResidual)
    assert isinstance(convnext.dw_mid, nn.Identity)
    assert convnext.has_skip
    assert isinstance(convnext.layer_scale, nn.Identity)  # the conv models have no layer scale


def test_tf_ports_pad_like_tensorflow_and_use_its_eps() -> None:
    from zoo.archs.layers.padding import Conv2dSame

    model = zoo.create_model("tf_mobilenetv3_small_100", pretrained=False).eval()
    assert isinstance(model.conv_stem, Conv2dSame)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # the strided stem makes the first tap: the stem's output ('bn1')
    assert model.feature_info[0].module == "bn1"
    with torch.no_grad():
        odd = model.forward_intermediates(torch.randn(1, 3, 37, 45), intermediates_only=True)
    assert [tuple(t.shape[-2:]) for t in odd] == [(19, 23), (10, 12), (5, 6), (3, 3), (2, 2)]


def test_hybrid_attention_keeps_the_map_and_scales_its_branch() -> None:
    from zoo.archs.layers.mobile_attention import MobileAttention

    model = zoo.create_model("mobilenetv4_hybrid_medium").eval()
    attn = model.get_submodule("blocks.2.4")
    assert isinstance(attn, MobileAttention)
    assert attn.has_skip
    assert attn.deepest_reduction == 32  # its input at stride 16, keys and values at 32
    assert hasattr(attn.attn.key, "down_conv")  # keys and values from a 2x downsampled map
    x = torch.randn(2, 160, 7, 9)
    with torch.no_grad():
        out = attn(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, rtol=0, atol=1e-3)  # the branch starts scaled by 1e-5


def test_anti_aliasing_kinds_of_mobilenetv4() -> None:
    from zoo.archs.layers.pool import BlurPool2d

    blur = zoo.create_model("mobilenetv4_conv_blur_medium", pretrained=False)
    er = blur.get_submodule("blocks.0.0")
    assert isinstance(er.aa, BlurPool2d)
    assert er.aa.pad_mode == "constant"
    aa = zoo.create_model("mobilenetv4_conv_aa_large", pretrained=False)
    pool = aa.get_submodule("blocks.1.0.dw_mid.aa")
    assert isinstance(pool, nn.AvgPool2d)
    assert not pool.ceil_mode
    assert aa.get_submodule("blocks.1.0.dw_mid.conv").stride == (1, 1)
