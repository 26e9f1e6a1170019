"""EfficientNet B0-B3 and the pruned B1-B3: reference taps, TF padding, scaling, drop rates, checks, surface."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from model_checks import (
    check_drop_rate_only_in_training,
    check_grad_checkpointing,
    check_intermediates,
    check_pretrained,
    check_prune,
    check_reference_taps,
    check_script_and_fx,
    images,
    meta_model,
    small_model,
)
from modelcache import built_as
from refdata import pruned_layout, reference
from weights_support import CheckpointServer
from zoo.archs.catalogue import FAMILIES
from zoo.archs.efficientnet import PRUNED_NAMES, EfficientNet
from zoo.archs.layers import BatchNormAct2d, DropPath
from zoo.archs.layers.mbconv import BlockDef, InvertedResidual, SqueezeExcite, scale_repeats
from zoo.archs.layers.padding import Conv2dSame, create_conv2d
from zoo.domain.prune import parse_prune_spec
from zoo.services.pruner import ChannelPruner

NAMES = FAMILIES["zoo.archs.efficientnet"]
X = images()
SMALL_STAGES = (
    (BlockDef("ds", 1, 3, 1, 8, se_ratio=0.25),),
    (BlockDef("ir", 2, 3, 2, 16, exp_ratio=3, se_ratio=0.25),),
    (BlockDef("ir", 1, 5, 2, 16, exp_ratio=2, se_ratio=0.25),),
    (BlockDef("ir", 1, 3, 1, 16, exp_ratio=2),),
)


def built(name: str) -> EfficientNet:
    """The session's one build of name (tests/modelcache.py)."""
    return built_as(name, EfficientNet)


def small(**kwargs: object) -> EfficientNet:
    """Four short stages at small widths: a training step in milliseconds."""
    defaults = {"stages": SMALL_STAGES, "stem_size": 8, "num_features": 32, "num_classes": 5}
    return small_model(EfficientNet, defaults, kwargs)


@pytest.mark.drawn_names(family="efficientnet")  # the run's drawn efficientnet names (tests/tiers.py)
def test_feature_info(name: str) -> None:
    model = meta_model(name, EfficientNet)
    check_reference_taps(model, name)


def test_surface_forward_intermediates() -> None:
    check_intermediates(built("efficientnet_b0"), X, later="blocks.3")


def test_norm_passes_the_last_tap_through_the_head_conv() -> None:
    model = small().eval()
    with torch.no_grad():
        final, taps = model.forward_intermediates(X)
        normed = model.forward_intermediates(X, norm=True, intermediates_only=True)
    assert taps[-1].shape[1] == 16
    assert torch.equal(normed[-1], final)
    assert all(torch.equal(a, b) for a, b in zip(normed[:-1], taps[:-1], strict=True))


def test_surface_prune() -> None:
    check_prune(built("efficientnet_b0"), X)


def test_prune_head_at_the_last_tap_drops_the_head_conv() -> None:
    model = small().eval()
    with torch.no_grad():
        _, taps = model.forward_intermediates(X)
        assert model.prune_intermediate_layers() == [2]
        assert torch.equal(model(X), taps[-1])
    assert model.num_features == model.head_hidden_size == 16
    assert not any(k.startswith(("conv_head.", "bn2.", "classifier.")) for k in model.state_dict())


@pytest.mark.parametrize("same_pad", [False, True])
def test_surface_script_and_fx(same_pad: bool) -> None:
    check_script_and_fx(small(drop_path_rate=0.1, same_pad=same_pad), torch.randn(1, 3, 37, 37))


def test_grad_checkpointing_changes_nothing_but_memory() -> None:
    check_grad_checkpointing(small(), images(2))
    model = small()
    with pytest.raises(zoo.ZooError, match="enable"):
        model.set_grad_checkpointing("yes")  # type: ignore[arg-type]  # what a caller could pass


def test_drop_path_rate_grows_with_depth() -> None:
    model = small(drop_path_rate=0.25)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    # five blocks, block i at 0.25 * i / 5; the first (rate 0) has none, and only residual blocks use theirs
    assert rates == pytest.approx([0.05, 0.1, 0.15, 0.2])
    skips = [m.has_skip for m in model.modules() if isinstance(m, InvertedResidual)]
    assert skips == [False, True, False, True]


def test_drop_rate_only_in_training() -> None:
    check_drop_rate_only_in_training(small(drop_rate=0.5), X)


def test_classifier_reset_and_pooling() -> None:
    model = small(global_pool="catavgmax").eval()
    assert model.head_hidden_size == 2 * model.num_features
    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Linear)
    assert classifier.in_features == 64
    before = model.get_classifier()
    with pytest.raises(zoo.ZooError, match="global_pool"):
        model.reset_classifier(4, "")
    assert model.get_classifier() is before  # refused: nothing changed
    model.reset_classifier(0, "")
    with torch.no_grad():
        assert model(X).shape == (1, 32, 8, 8)
    model.reset_classifier(4, "max")
    assert model.head_hidden_size == 32
    with torch.no_grad():
        assert model(X).shape == (1, 4)


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(in_chans: int) -> None:
    model = small(in_chans=in_chans).eval()
    with torch.no_grad():
        assert model(torch.randn(1, in_chans, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"channel_multiplier": 0}, "channel_multiplier"),
        ({"depth_multiplier": "2"}, "depth_multiplier"),
        ({"stem_size": 0}, "stem_size"),
        ({"num_features": 2.0}, "num_features"),
        ({"act_layer": "mish"}, "act_layer"),
        ({"bn_eps": -1.0}, "bn_eps"),
        ({"same_pad": 1}, "same_pad"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"drop_path_rate": -0.1}, "drop_path_rate"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"global_pool": "mean"}, "global_pool"),
        ({"stages": ()}, "stages"),
        ({"stages": ((),)}, "stages"),
        ({"stages": (("ir_r1_k3_s1_e1_c16",),)}, "stages"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        small(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"kind": "mb"}, "kind"),
        ({"repeats": 0}, "repeats"),
        ({"kernel": 4}, "kernel"),
        ({"stride": 3}, "stride"),
        ({"out_chs": 0}, "out_chs"),
        ({"exp_ratio": 0.5}, "exp_ratio"),
        ({"se_ratio": 2.0}, "se_ratio"),
        ({"act": "swish"}, "act"),
        ({"noskip": "no"}, "noskip"),
    ],
)
def test_block_def_checks_its_fields(kwargs: dict[str, object], named: str) -> None:
    args: dict[str, object] = {"kind": "ir", "repeats": 1, "kernel": 3, "stride": 1, "out_chs": 8, **kwargs}
    with pytest.raises(zoo.ZooError, match=named):
        BlockDef(**args)  # type: ignore[arg-type]  # what a caller could pass


def test_depth_scaling_rounds_up_and_spreads_from_the_last_run() -> None:
    assert scale_repeats([3], 1.4) == [5]  # ceil(4.2)
    assert scale_repeats([1, 1, 2], 1.0) == [1, 1, 2]
    assert scale_repeats([1, 1, 2], 2.0) == [2, 2, 4]
    assert scale_repeats([1, 3], 1.1) == [1, 4]  # the one extra block goes to the last run
    # the scaled stage depths are the published ones: blocks per stage, read off the reference layout
    layout = reference("efficientnet_b3")["state_dict"]
    depths = [len({k.split(".")[2] for k in layout if k.startswith(f"blocks.{s}.")}) for s in range(7)]
    assert depths == [len(list(stage.children())) for stage in built("efficientnet_b3").blocks]


@pytest.mark.parametrize("size", [7, 8])
def test_same_padding_pads_like_tensorflow(size: int) -> None:
    torch.manual_seed(0)
    conv = create_conv2d(2, 3, 3, 2, same_pad=True)
    assert isinstance(conv, Conv2dSame)
    assert type(create_conv2d(2, 3, 3, 1, same_pad=True)) is nn.Conv2d  # stride 1: static padding suffices
    x = torch.randn(1, 2, size, size)
    # ceil(size / 2) outputs; an odd total padding puts the extra pixel right/bottom
    pad = [1, 1, 1, 1] if size == 7 else [0, 1, 0, 1]
    expected = F.conv2d(F.pad(x, pad), conv.weight, conv.bias, 2)
    assert expected.shape[-1] == -(-size // 2)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)


# -- the pruned names -----------------------------------------------------------------------------

PRUNED = PRUNED_NAMES


@pytest.mark.parametrize("name", PRUNED)
def test_pruned_models_have_the_published_layout(name: str) -> None:
    spec = zoo.api.default_zoo().get_spec(name)
    assert spec.prune_spec is not None
    assert parse_prune_spec(spec.prune_spec) == parse_prune_spec(pruned_layout(name))
    model = built(name)
    layout = parse_prune_spec(pruned_layout(name))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert all(shapes[k] == s for k, s in layout.tensors)
    # TF-trained: eps 1e-3 and 'same' padding on the strided convs; the norms keep their activation
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(isinstance(m, BatchNormAct2d) and m.eps == 1e-3 for m in norms)
    strided = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert strided
    assert all(isinstance(m, Conv2dSame) for m in strided)


def test_the_pruner_resizes_fused_norms_and_same_padding_convs() -> None:
    model = small(same_pad=True, bn_eps=1e-3).eval()
    spec = (
        "blocks.1.0.conv_pw.weight:[20, 8, 1, 1]***blocks.1.0.bn1.weight:[20]***blocks.1.0.conv_dw.weight:[20, 1, 3, 3]"
        "***blocks.1.0.bn2.weight:[20]***blocks.1.0.se.conv_reduce.weight:[1, 20, 1, 1]"
        "***blocks.1.0.se.conv_expand.weight:[20, 1, 1, 1]***blocks.1.0.conv_pwl.weight:[16, 20, 1, 1]"
    )
    ChannelPruner().apply(model, spec)
    block = model.get_submodule("blocks.1.0")
    assert isinstance(block, InvertedResidual)
    assert isinstance(block.bn1, BatchNormAct2d)
    assert (block.bn1.num_features, block.bn1.eps) == (20, 1e-3)
    assert isinstance(block.bn1.act, nn.SiLU)
    assert block.bn1.running_var is not None
    assert torch.equal(block.bn1.running_var, torch.ones(20))
    assert isinstance(block.conv_dw, Conv2dSame)
    assert (block.conv_dw.groups, block.conv_dw.stride) == (20, (2, 2))
    assert isinstance(block.se, SqueezeExcite)
    with torch.no_grad():
        assert model(X).shape == (1, 5)


def test_pretrained_pruned_checkpoint_loads(server: CheckpointServer, cache_dir: Path) -> None:
    check_pretrained("efficientnet_b1_pruned", server, cache_dir)


def test_the_pruner_derives_specs_through_fused_norms_and_se() -> None:
    model = small(same_pad=True).eval()
    pruner = ChannelPruner()
    _, whole = pruner.derive(model, 0.0)
    spec, half = pruner.derive(model, 0.5)
    with torch.no_grad():
        assert torch.equal(whole.eval()(X), model(X))  # ratio 0 keeps every channel and weight
        assert half.eval()(X).shape == (1, 5)
    assert sum(p.numel() for p in half.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())
    # the expanded width is one channel space: expansion conv, depthwise conv, its norms and the SE gate agree
    block = half.get_submodule("blocks.1.0")
    assert isinstance(block, InvertedResidual)
    width = spec["blocks.1.0.conv_pw.weight"][0]
    assert spec["blocks.1.0.conv_dw.weight"] == (width, 1, 3, 3)
    assert spec["blocks.1.0.se.conv_expand.weight"][0] == width < 24
    assert isinstance(block.bn2, BatchNormAct2d)
    assert block.bn2.num_features == width
