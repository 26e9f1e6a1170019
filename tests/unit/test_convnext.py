"""ConvNeXt: reference taps, output_stride, pool-then-norm heads, layer scale, drop rates, argument checks, surface."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from model_checks import (
    check_drop_rate_only_in_training,
    check_grad_checkpointing,
    check_intermediates,
    check_prune,
    check_reference_taps,
    check_script_and_fx,
    images,
    meta_model,
    small_model,
)
from zoo.archs.convnext import ConvNeXt, ConvNeXtBlock
from zoo.archs.layers import DropPath
from zoo.archs.layers.grn import GlobalResponseNorm
from zoo.archs.layers.norm import LayerNorm2d, SimpleNorm, SimpleNorm2d
from zoo.archs.layers.norm_head import NormMlpClassifierHead

X = images()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small forwards on one torch thread


def small(**kwargs: object) -> ConvNeXt:
    """Four stages at small widths: a training step in milliseconds."""
    model = small_model(ConvNeXt, {"depths": (1, 1, 2, 1), "dims": (8, 16, 24, 32), "num_classes": 5}, kwargs)
    with torch.no_grad():  # a visible residual branch and head norm (the defaults start at 1e-6 and identity)
        for name, p in model.named_parameters():
            if name.endswith("gamma") or (name.startswith("head.norm") and name.endswith("weight")):
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.drawn_names(family="convnext")  # the run's drawn convnext names (tests/tiers.py)
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_feature_info(name: str, output_stride: int) -> None:
    model = meta_model(name, ConvNeXt, output_stride=output_stride)
    check_reference_taps(model, name, output_stride=output_stride)


@pytest.mark.parametrize("kwargs", [{}, {"head_norm_first": True}], ids=["norm_after_pool", "norm_first"])
def test_surface_forward_intermediates(kwargs: dict[str, object]) -> None:
    check_intermediates(small(**kwargs), X, later="stages.2")


def test_surface_prune() -> None:
    check_prune(small(depths=(1, 1, 2, 3)), X)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop_path_rate": 0.1},
        {"conv_mlp": True, "head_hidden_size": 12},
        {"head_norm_first": True, "output_stride": 8},
    ],
    ids=["default", "conv_mlp", "norm_first_os8"],
)
def test_surface_script_and_fx(kwargs: dict[str, object]) -> None:
    check_script_and_fx(small(**kwargs), X)


def test_grad_checkpointing_changes_nothing_but_memory() -> None:
    check_grad_checkpointing(small(), images(2))
    model = small()
    with pytest.raises(zoo.ZooError, match="enable"):
        model.set_grad_checkpointing(1)  # type: ignore[arg-type]  # what a caller could pass


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_dilates_instead_of_striding(output_stride: int) -> None:
    model = small(output_stride=output_stride).eval()
    with torch.no_grad():
        taps = model.forward_intermediates(X, intermediates_only=True)
    assert [t.shape[-1] for t in taps] == [64 // min(r, output_stride) for r in (4, 8, 16, 32)]
    dilations = {m.dilation[0] for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    assert max(dilations) == 32 // output_stride


def test_head_pools_then_normalises() -> None:
    model = small(global_pool="avg").eval()
    head = model.head
    assert isinstance(head, NormMlpClassifierHead)
    norm = head.norm
    assert isinstance(norm, LayerNorm2d)
    with torch.no_grad():
        feats = model.forward_features(X)
        mean = feats.mean((2, 3))
        expected = F.layer_norm(mean, (32,), norm.weight, norm.bias, 1e-6)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), expected)
        assert model.head_hidden_size == 32
        # catavgmax (beyond the reference, which refuses it): each pooled half is normalised on its own
        model.reset_classifier(3, "catavgmax")
        assert model.head_hidden_size == 64
        top = F.layer_norm(feats.amax((2, 3)), (32,), norm.weight, norm.bias, 1e-6)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), torch.cat((expected, top), 1))
        assert model(X).shape == (1, 3)
        # unpooled: every position normalised over its channels
        model.reset_classifier(0, "")
        fmap = model(X)
        moved = feats.permute(0, 2, 3, 1)
        torch.testing.assert_close(fmap, F.layer_norm(moved, (32,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2))
    assert model.head.norm is norm  # a reset keeps the trained norm
    with pytest.raises(zoo.ZooError, match="global_pool"):
        model.reset_classifier(4)


def test_head_hidden_layer() -> None:
    model = small(head_hidden_size=12, num_classes=3).eval()
    assert model.head_hidden_size == 12
    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Linear)
    assert classifier.in_features == 12
    with torch.no_grad():
        feats = model.forward_features(X)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (1, 12)
        assert (pre >= -0.2).all()  # after GELU
        model.reset_classifier(0, "")
        fmap = model(X)
    # the hidden layer runs at every position of the unpooled map, with the same weights
    head = model.head
    assert isinstance(head, NormMlpClassifierHead)
    fc = head.pre_logits.get_submodule("fc")
    assert isinstance(fc, nn.Linear)
    norm = head.norm
    assert isinstance(norm, LayerNorm2d)
    moved = F.layer_norm(feats.permute(0, 2, 3, 1), (32,), norm.weight, norm.bias, 1e-6)
    torch.testing.assert_close(fmap, F.gelu(F.linear(moved, fc.weight, fc.bias)).permute(0, 3, 1, 2))
    with pytest.raises(zoo.ZooError, match="catavgmax"):
        model.reset_classifier(3, "catavgmax")
    assert model.head_hidden_size == 12  # the refused reset changed nothing


def test_norm_applies_only_what_follows_the_last_tap() -> None:
    # the default head's norm comes after pooling: norm=True leaves the taps as they are (as the reference does)
    model = small().eval()
    with torch.no_grad():
        final, taps = model.forward_intermediates(X, norm=True)
        assert torch.equal(taps[-1], final)
        first = small(head_norm_first=True).eval()
        raw = first.forward_intermediates(X, intermediates_only=True)
        normed = first.forward_intermediates(X, norm=True, intermediates_only=True)
        final_first = first.forward_features(X)
    assert torch.equal(normed[-1], final_first)
    assert not torch.allclose(raw[-1], final_first)
    assert all(torch.equal(a, b) for a, b in zip(raw[:-1], normed[:-1], strict=True))


def test_prune_drops_the_head_norm() -> None:
    model = small().eval()
    model.prune_intermediate_layers(1)
    assert not any(k.startswith("head.") for k in model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(X), model.forward_features(X))
    first = small(head_norm_first=True).eval()
    first.prune_intermediate_layers(1, prune_norm=True)
    assert not any(k.startswith(("head.", "norm_pre.")) for k in first.state_dict())


def test_layer_scale() -> None:
    model = ConvNeXt(depths=(1, 1), dims=(8, 16), ls_init_value=0.25, num_classes=2)
    gammas = [m.gamma for m in model.modules() if isinstance(m, ConvNeXtBlock)]
    assert all(g is not None and torch.equal(g, torch.full_like(g, 0.25)) for g in gammas)
    plain = ConvNeXt(depths=(1, 1), dims=(8, 16), ls_init_value=None, num_classes=2)
    assert not any(k.endswith("gamma") for k in plain.state_dict())


def test_drop_path_rate_grows_with_depth() -> None:
    model = small(drop_path_rate=0.4)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.1, 0.2, 0.3, 0.4])  # the first block at 0 has none


def test_drop_rate_only_in_training() -> None:
    check_drop_rate_only_in_training(small(drop_rate=0.5), X)


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(in_chans: int) -> None:
    model = small(in_chans=in_chans).eval()
    assert model(torch.randn(1, in_chans, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"output_stride": 4}, "output_stride"),
        ({"depths": (1, 1)}, "dims"),
        ({"depths": (1, 0, 1, 1)}, "depths"),
        ({"kernel_sizes": (7, 7)}, "kernel_sizes"),
        ({"kernel_sizes": 4}, "kernel_sizes"),
        ({"ls_init_value": "1e-6"}, "ls_init_value"),
        ({"patch_size": 0}, "patch_size"),
        ({"head_init_scale": float("nan")}, "head_init_scale"),
        ({"head_norm_first": 1}, "head_norm_first"),
        ({"head_hidden_size": 0}, "head_hidden_size"),
        ({"head_hidden_size": 8, "head_norm_first": True}, "head_hidden_size"),
        ({"head_hidden_size": 8, "global_pool": "catavgmax"}, "global_pool"),
        ({"conv_mlp": "yes"}, "conv_mlp"),
        ({"conv_bias": None}, "conv_bias"),
        ({"norm_eps": -1.0}, "norm_eps"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"drop_path_rate": -0.1}, "drop_path_rate"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"global_pool": "mean"}, "global_pool"),
        ({"global_pool": ""}, "global_pool"),
        ({"stem_type": "overlapping"}, "stem_type"),
        ({"act_layer": "swish"}, "act_layer"),
        ({"norm_layer": "rmsnorm"}, "norm_layer"),
        ({"use_grn": 1}, "use_grn"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        small(**kwargs)


def test_prune_leaves_the_source_model_whole() -> None:
    model = small().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(X)
    shallow = copy.copy(model)
    for table in ("_modules", "_parameters", "_buffers"):
        object.__setattr__(shallow, table, dict(getattr(model, table)))
    shallow.prune_intermediate_layers([0, 1])
    with torch.no_grad():
        assert torch.equal(model(X), expected)
    assert model.state_dict().keys() == before.keys()
    assert model.num_classes == 5


def _fb_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict in the original release's names (as its published .pth files hold them), MLPs as Linear."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "stem":
            key = "downsample_layers.0." + ".".join(parts[1:])
        elif parts[0] == "stages" and parts[2] == "downsample":
            key = f"downsample_layers.{parts[1]}." + ".".join(parts[3:])
        elif parts[0] == "stages":
            rest = ".".join(parts[4:]).replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
            key = f"stages.{parts[1]}.{parts[3]}.{rest}"
        elif key.startswith("head.norm."):
            key = key.removeprefix("head.")
        elif key.startswith("head.fc."):
            key = "head." + parts[-1]
        out[key] = value.flatten(1) if "pwconv" in key and value.ndim == 4 else value
    return out


@pytest.mark.parametrize("conv_mlp", [False, True])
def test_original_release_checkpoints_are_renamed(conv_mlp: bool) -> None:
    model = small(conv_mlp=conv_mlp)
    state = model.state_dict()
    fb = _fb_layout(state)
    assert "downsample_layers.1.1.weight" in fb
    assert "stages.2.1.pwconv2.weight" in fb
    spec = zoo.api.default_zoo().get_spec("convnext_tiny")
    assert spec.pretrained_filter is not None
    converted = spec.pretrained_filter({"model": fb}, model)  # type: ignore[dict-item]  # the release's nesting
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], v) for k, v in state.items())
    # a checkpoint already in this layout (the hub's) passes as it is
    assert spec.pretrained_filter(state, model) == state


def test_simple_norm_scales_by_the_unbiased_deviation_without_centring() -> None:
    torch.manual_seed(0)
    norm = SimpleNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 6) + 2.0
    expected = x / torch.sqrt(x.var(-1, unbiased=True, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert list(norm.state_dict()) == ["weight"]
    map_norm = SimpleNorm2d(6, eps=1e-5)
    map_norm.load_state_dict(norm.state_dict())
    nchw = x.reshape(2, 3, 1, 6).permute(0, 3, 1, 2)
    torch.testing.assert_close(map_norm(nchw), expected.reshape(2, 3, 1, 6).permute(0, 3, 1, 2))


def test_global_response_norm() -> None:
    torch.manual_seed(0)
    grn = GlobalResponseNorm(5, channels_last=False)
    x = torch.randn(2, 5, 4, 3)
    assert torch.equal(grn(x), x)  # zero weight and bias: the identity
    with torch.no_grad():
        grn.weight.uniform_(-1, 1)
        grn.bias.uniform_(-1, 1)
    energy = x.pow(2).sum((2, 3), keepdim=True).sqrt()
    relative = energy / (energy.mean(1, keepdim=True) + 1e-6)
    w, b = grn.weight.view(1, -1, 1, 1), grn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(grn(x), x + b + w * x * relative)
    last = GlobalResponseNorm(5)  # channels-last: the same values on the permuted map
    last.load_state_dict(grn.state_dict())
    torch.testing.assert_close(last(x.permute(0, 2, 3, 1)), grn(x).permute(0, 2, 3, 1))


@pytest.mark.parametrize(
    ("stem_type", "layers"),
    [
        ("patch", ["Conv2d", "LayerNorm2d"]),
        ("overlap", ["Conv2d", "Conv2d", "LayerNorm2d"]),
        ("overlap_tiered", ["Conv2d", "Conv2d", "LayerNorm2d"]),
        ("overlap_act", ["Conv2d", "GELU", "Conv2d", "LayerNorm2d"]),
    ],
)
def test_stems_reduce_by_four(stem_type: str, layers: list[str]) -> None:
    model = small(stem_type=stem_type, dims=(40, 48, 56, 64)).eval()
    assert [type(m).__name__ for m in model.stem] == layers
    if stem_type == "overlap_tiered":
        assert model.stem[0].out_channels == 24  # half the width, rounded up to a multiple of 8
    with torch.no_grad():
        assert model.stem(X).shape[-1] == X.shape[-1] // 4
    assert model.feature_info[0].reduction == 4


def test_v2_blocks_and_norm_and_activation_choices() -> None:
    model = small(use_grn=True, ls_init_value=None, norm_layer="simplenorm", act_layer="silu", conv_mlp=True)
    block = model.get_submodule("stages.0.blocks.0")
    assert isinstance(block, ConvNeXtBlock)
    assert block.gamma is None
    assert isinstance(block.norm, SimpleNorm2d)
    assert isinstance(block.mlp.grn, GlobalResponseNorm)
    assert isinstance(block.mlp.act, nn.SiLU)
    head = model.head
    assert isinstance(head, NormMlpClassifierHead)
    assert isinstance(head.norm, SimpleNorm2d)
    linear = small(use_grn=True, act_layer="gelu_tanh").get_submodule("stages.0.blocks.0")
    assert isinstance(linear, ConvNeXtBlock)
    assert not isinstance(linear.norm, SimpleNorm)
    assert isinstance(linear.mlp.act, nn.GELU)
    assert linear.mlp.act.approximate == "tanh"
    assert isinstance(linear.mlp.grn, GlobalResponseNorm)
    assert linear.mlp.grn.channels_last


def test_v2_release_and_clip_checkpoints_are_renamed() -> None:
    model = small(use_grn=True, ls_init_value=None, conv_mlp=True)
    state = model.state_dict()
    fb = _fb_layout(state)
    for key in [k for k in fb if ".mlp.grn." in k or ".grn." in k]:
        value = fb.pop(key)
        stage_block, leaf = key.rsplit(".grn.", 1)
        fb[f"{stage_block.removesuffix('.mlp')}.grn.{'gamma' if leaf == 'weight' else 'beta'}"] = value.reshape(
            1, 1, 1, -1
        )
    fb["projectors.0.weight"] = torch.zeros(3)  # an extra head of some releases: dropped
    spec = zoo.api.default_zoo().get_spec("convnextv2_atto")
    assert spec.pretrained_filter is not None
    converted = spec.pretrained_filter(fb, model)
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], v) for k, v in state.items())
    # an OpenCLIP image tower: the trunk, and its projection as the classifier (zero bias)
    clip = {f"visual.trunk.{k}": v for k, v in state.items() if not k.startswith("head.fc.")}
    clip["visual.head.proj.weight"] = state["head.fc.weight"]
    from_clip = spec.pretrained_filter(clip, model)
    assert from_clip.keys() == state.keys()
    assert torch.equal(from_clip["head.fc.weight"], state["head.fc.weight"])
    assert not from_clip["head.fc.bias"].any()
