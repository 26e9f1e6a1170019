"""RegNet: the width rule against the reference layouts, taps, output_stride, shortcut kinds, arguments, surface."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
import torch
from torch import nn

import zoo
from model_checks import (
    check_classifier_reset_and_pooling,
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
from refdata import reference
from weights_support import CheckpointServer
from zoo.archs.layers import ConvNormAct, DropPath, SEModule
from zoo.archs.regnet import Bottleneck, PreBottleneck, RegNet, RegNetCfg, StageLayout, stage_layouts
from zoo.services.pruner import ChannelPruner

X = images()
# block widths 8, 20, 32, 44, 56, 68 snap to 8, 16, 32, 32, 64, 64: four stages of 1, 1, 2, 2 blocks
SMALL = RegNetCfg(depth=6, w0=8, wa=12.0, wm=2.0, group_size=8, se_ratio=0.25, stem_width=8)
# the pre-activation (V) and inverted-bottleneck (Z, with a final 1x1 to 24 channels) designs at the same widths
SMALL_V = attrs.evolve(SMALL, preact=True, act_layer="silu", downsample="avg")
SMALL_Z = attrs.evolve(SMALL, bottle_ratio=4.0, downsample=None, linear_out=True, num_features=24, act_layer="silu")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small forwards on one torch thread


def small(**kwargs: object) -> RegNet:
    """Four stages at small widths (SMALL unless cfg is given): a training step in milliseconds."""
    return small_model(RegNet, {"cfg": SMALL, "num_classes": 5, "zero_init_last": False}, kwargs)


def test_small_layout() -> None:
    assert stage_layouts(SMALL) == [
        StageLayout(8, 1, 8),
        StageLayout(16, 1, 8),
        StageLayout(32, 2, 8),
        StageLayout(64, 2, 8),
    ]


@pytest.mark.every_name(family="regnet")  # no build: cheap for every name
def test_width_rule_gives_the_reference_layout(name: str) -> None:
    shapes = reference(name)["state_dict"]
    cfg = zoo.api.default_zoo().get_spec(name).model_args["cfg"]
    assert isinstance(cfg, RegNetCfg)
    conv = "" if cfg.preact else ".conv"  # a pre-activation block's convolutions are bare
    expected = []
    for stage in range(1, 5):
        blocks = {int(m.group(1)) for k in shapes if (m := re.match(rf"s{stage}\.b(\d+)\.", k))}
        width = shapes[f"s{stage}.b1.conv3{conv}.weight"][0]
        mid, group = shapes[f"s{stage}.b1.conv2{conv}.weight"][:2]
        assert mid == round(width * cfg.bottle_ratio)
        expected.append(StageLayout(width, len(blocks), group))
    assert stage_layouts(cfg) == expected


@pytest.mark.drawn_names(family="regnet")  # the run's drawn regnet names (tests/tiers.py)
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_feature_info(name: str, output_stride: int) -> None:
    model = meta_model(name, RegNet, output_stride=output_stride)
    check_reference_taps(model, name, output_stride=output_stride)
    assert any(isinstance(m, SEModule) for m in model.modules()) == (not name.startswith("regnetx_"))
    assert any(isinstance(m, PreBottleneck) for m in model.modules()) == name.startswith("regnetv_")


@pytest.mark.parametrize("cfg", [SMALL, SMALL_V, SMALL_Z], ids=["y", "v", "z"])
def test_surface_forward_intermediates(cfg: RegNetCfg) -> None:
    check_intermediates(small(cfg=cfg), X, later="s2")


@pytest.mark.parametrize("cfg", [SMALL, SMALL_V, SMALL_Z], ids=["y", "v", "z"])
def test_surface_prune(cfg: RegNetCfg) -> None:
    check_prune(small(cfg=cfg), X)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop_path_rate": 0.1},
        {"cfg": attrs.evolve(SMALL, downsample="avg", linear_out=True), "output_stride": 8},
        {"cfg": attrs.evolve(SMALL, downsample=None)},
        {"cfg": SMALL_V, "output_stride": 16, "drop_path_rate": 0.1},
        {"cfg": attrs.evolve(SMALL_V, downsample="conv1x1"), "output_stride": 8},
        {"cfg": SMALL_Z},
    ],
    ids=["default", "avg_linear_out_os8", "no_shortcut", "preact_avg_os16", "preact_conv_os8", "z_final_conv"],
)
def test_surface_script_and_fx(kwargs: dict[str, object]) -> None:
    check_script_and_fx(small(**kwargs), X)


@pytest.mark.parametrize("cfg", [SMALL, SMALL_V, SMALL_Z], ids=["y", "v", "z"])
def test_grad_checkpointing_changes_nothing_but_memory(cfg: RegNetCfg) -> None:
    check_grad_checkpointing(small(cfg=cfg), images(2))


@pytest.mark.parametrize("downsample", ["conv1x1", "avg"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_dilates_instead_of_striding(downsample: str, output_stride: int) -> None:
    model = small(cfg=attrs.evolve(SMALL, downsample=downsample), output_stride=output_stride).eval()
    with torch.no_grad():
        taps = model.forward_intermediates(X, intermediates_only=True)
    assert [t.shape[-1] for t in taps] == [64 // min(r, output_stride) for r in (2, 4, 8, 16, 32)]
    dilations = {m.dilation[0] for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)}
    assert max(dilations) == 32 // output_stride


def test_linear_out_ends_with_one_activation() -> None:
    model = small(cfg=attrs.evolve(SMALL, linear_out=True)).eval()
    assert not any(isinstance(m.act3, nn.ReLU) for m in model.modules() if isinstance(m, Bottleneck))
    with torch.no_grad():
        final, taps = model.forward_intermediates(X)
        normed = model.forward_intermediates(X, norm=True, intermediates_only=True)
    assert (taps[-1] < 0).any()
    assert torch.equal(final, torch.relu(taps[-1]))
    assert torch.equal(normed[-1], final)
    model.prune_intermediate_layers(prune_norm=True)
    with torch.no_grad():
        assert torch.equal(model(X), taps[-1])


def test_no_shortcut_where_the_shape_changes() -> None:
    model = small(cfg=attrs.evolve(SMALL, downsample=None))
    firsts = [model.get_submodule(f"s{i}.b1") for i in range(1, 5)]
    assert all(isinstance(b, Bottleneck) and b.downsample is None for b in firsts)
    assert not any(".downsample." in k for k in model.state_dict())
    second = model.get_submodule("s3.b2")
    assert isinstance(second, Bottleneck)
    assert isinstance(second.downsample, nn.Identity)


def test_zero_init_last() -> None:
    zeroed = small(zero_init_last=True)
    blocks = [m for m in zeroed.modules() if isinstance(m, Bottleneck)]
    assert all(not b.conv3.bn.get_parameter("weight").any() for b in blocks)
    ones = [b for b in small().modules() if isinstance(b, Bottleneck)]
    assert all(bool((b.conv3.bn.get_parameter("weight") == 1).all()) for b in ones)


def test_drop_path_rate_grows_with_depth() -> None:
    model = small(drop_path_rate=0.5)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])  # the first block at 0 has none


def test_drop_rate_only_in_training() -> None:
    check_drop_rate_only_in_training(small(drop_rate=0.5), X)


def test_classifier_reset_and_pooling() -> None:
    check_classifier_reset_and_pooling(small(global_pool="catavgmax", output_stride=8), X)


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(in_chans: int) -> None:
    model = small(in_chans=in_chans).eval()
    assert model(torch.randn(1, in_chans, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"cfg": {"depth": 6}}, "cfg"),
        ({"cfg": attrs.evolve(SMALL, depth=3)}, "3 stages"),
        ({"output_stride": 4}, "output_stride"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"drop_path_rate": "0.1"}, "drop_path_rate"),
        ({"zero_init_last": 0}, "zero_init_last"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": -1}, "num_classes"),
        ({"global_pool": "mean"}, "global_pool"),
        ({"global_pool": ""}, "global_pool"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        small(**kwargs)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"depth": 0}, "depth"),
        ({"w0": 12}, "w0"),
        ({"wa": -1.0}, "wa"),
        ({"wm": 1.0}, "wm"),
        ({"group_size": 0}, "group_size"),
        ({"bottle_ratio": 0.0}, "bottle_ratio"),
        ({"se_ratio": 1.0}, "se_ratio"),
        ({"group_min_ratio": -0.5}, "group_min_ratio"),
        ({"stem_width": 0}, "stem_width"),
        ({"downsample": "max"}, "downsample"),
        ({"linear_out": "no"}, "linear_out"),
        ({"bottle_ratio": 9.0}, "bottle_ratio"),
        ({"preact": 1}, "preact"),
        ({"num_features": -1}, "num_features"),
        ({"act_layer": "gelu"}, "act_layer"),
    ],
)
def test_cfg_checks_its_fields(fields: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        attrs.evolve(SMALL, **fields)  # type: ignore[arg-type]  # the checks under test see the real values


def test_pretrained_checkpoint_loads(server: CheckpointServer, cache_dir: Path) -> None:
    check_pretrained("regnetx_016", server, cache_dir)


def test_preact_blocks_normalise_first_and_end_unactivated() -> None:
    model = small(cfg=SMALL_V).eval()
    assert isinstance(model.stem, nn.Conv2d)  # a bare convolution: the first block's norm1 follows it
    blocks = [m for m in model.modules() if isinstance(m, PreBottleneck)]
    assert len(blocks) == 6
    assert not any(isinstance(m, Bottleneck) for m in model.modules())
    assert {"stem.weight", "s1.b1.norm1.weight", "s1.b1.conv1.weight", "s1.b1.downsample.1.weight"} <= set(
        model.state_dict()
    )
    assert isinstance(model.final_conv, nn.SiLU)  # the network's one closing activation
    block = model.get_submodule("s3.b2")  # an identity shortcut
    assert isinstance(block, PreBottleneck)
    x = torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        branch = block.conv3(block.norm3(block.se(block.conv2(block.norm2(block.conv1(block.norm1(x)))))))
        # the shortcut carries the first norm's activated output, and the sum is not activated
        assert torch.equal(block(x), branch + block.norm1(x))
        nn.init.zeros_(block.conv3.weight)
        torch.testing.assert_close(block(x), block.norm1(x), rtol=0, atol=0)
        assert (block(x) < 0).any()  # SiLU's negative lobe: nothing clips it afterwards


def test_preact_zero_init_last_touches_nothing() -> None:
    torch.manual_seed(0)
    plain = small(cfg=SMALL_V)
    torch.manual_seed(0)
    zeroed = small(cfg=SMALL_V, zero_init_last=True)
    for (k, a), b in zip(plain.state_dict().items(), zeroed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_silu_designs_use_silu_everywhere() -> None:
    for cfg in (SMALL_V, SMALL_Z):
        model = small(cfg=cfg)
        acts = {type(m) for m in model.modules() if isinstance(m, nn.ReLU | nn.SiLU)}
        assert acts == {nn.SiLU}, cfg
        se = next(m for m in model.modules() if isinstance(m, SEModule))
        assert isinstance(se.act, nn.SiLU)


def test_inverted_bottleneck_with_final_conv() -> None:
    model = small(cfg=SMALL_Z).eval()
    b1 = model.get_submodule("s2.b1")
    assert isinstance(b1, Bottleneck)
    assert b1.conv1.conv.out_channels == 4 * 16  # inside four times as wide as out
    assert b1.downsample is None  # no shortcut where the shape changes
    b2 = model.get_submodule("s3.b2")
    assert isinstance(b2, Bottleneck)
    assert isinstance(b2.downsample, nn.Identity)
    assert isinstance(b2.act3, nn.Identity)  # linear_out: the final conv's activation is the network's
    assert model.num_features == 24
    assert model.feature_info[-1].num_chs == 64
    with torch.no_grad():
        final, taps = model.forward_intermediates(X)
        normed = model.forward_intermediates(X, norm=True, intermediates_only=True)
    assert final.shape[1] == 24
    assert taps[-1].shape[1] == 64
    assert torch.equal(normed[-1], final)  # norm=True runs the last tap through the final conv, as forward does
    assert model(X).shape == (1, 5)


@pytest.mark.parametrize(("prune_norm", "prune_head"), [(False, True), (True, False), (True, True)])
def test_final_conv_goes_with_the_head_or_the_norm(prune_norm: bool, prune_head: bool) -> None:
    model = small(cfg=SMALL_Z).eval()
    with torch.no_grad():
        _, taps = model.forward_intermediates(X)
    assert model.prune_intermediate_layers(4, prune_norm=prune_norm, prune_head=prune_head) == [1, 2, 3, 4]
    assert isinstance(model.final_conv, nn.Identity)
    assert model.num_features == model.head_hidden_size == 64
    with torch.no_grad():
        assert torch.equal(model(X), taps[-1])  # the classifier, sized for the final conv, went too


def test_final_conv_stays_without_pruning_either() -> None:
    model = small(cfg=SMALL_Z)
    model.prune_intermediate_layers(4, prune_head=False)
    assert not isinstance(model.final_conv, nn.Identity)
    assert model.num_features == 24


@pytest.mark.parametrize(("name", "plain"), [("regnetx_004_tv", "regnetx_004"), ("regnety_008_tv", "regnety_008")])
def test_tv_designs_round_widths_as_torchvision(name: str, plain: str) -> None:
    specs = {n: zoo.api.default_zoo().get_spec(n) for n in (name, plain)}
    cfg, plain_cfg = (specs[n].model_args["cfg"] for n in (name, plain))
    assert isinstance(cfg, RegNetCfg)
    assert isinstance(plain_cfg, RegNetCfg)
    assert attrs.evolve(cfg, group_min_ratio=0.0) == plain_cfg  # the same design, rounded differently
    assert stage_layouts(cfg) != stage_layouts(plain_cfg)
    default = specs[name].default_cfgs[0]
    assert default.tag == "tv2_in1k"
    assert default.url is not None
    assert default.url.startswith("https://download.pytorch.org/models/")


@pytest.mark.parametrize(
    ("name", "tag"),
    [("regnetx_008", "tv2_in1k"), ("regnety_120", "sw_in12k_ft_in1k"), ("regnety_1280", "swag_ft_in1k")],
)
def test_default_tag_is_the_reference_default(name: str, tag: str) -> None:
    assert zoo.api.default_zoo().get_spec(name).default_cfgs[0].tag == tag


def test_z_designs_are_built_without_zero_init_last() -> None:
    for name in ("regnetz_040", "regnetz_040_h"):
        assert zoo.api.default_zoo().get_spec(name).model_args["zero_init_last"] is False
    model = meta_model("regnetz_040_h", RegNet)
    assert isinstance(model.final_conv, ConvNormAct)
    assert model.num_features == 1536


@pytest.mark.parametrize("cfg", [SMALL, SMALL_V, SMALL_Z], ids=["y", "v", "z"])
def test_channel_pruning_derives_a_narrower_model(cfg: RegNetCfg) -> None:
    model = small(cfg=cfg).eval()
    spec, pruned = ChannelPruner().derive(model, 0.5)
    assert len(spec) > 0
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert pruned.eval()(X).shape == (1, 5)
