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
from zoo.archs.layers import DropPath, SEModule
from zoo.archs.regnet import Bottleneck, PreBottleneck, RegNet, RegNetCfg, StageLayout, stage_layouts

X = images()
# block widths 8, 20, 32, 44, 56, 68 snap to 8, 16, 32, 32, 64, 64: four stages of 1, 1, 2, 2 blocks
SMALL = RegNetCfg(depth=6, w0=8, wa=12.0, wm=2.0, group_size=8, se_ratio=0.25, stem_width=8)


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


def test_surface_forward_intermediates() -> None:
    check_intermediates(small(), X, later="s2")


def test_surface_prune() -> None:
    check_prune(small(), X)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop_path_rate": 0.1},
        {"cfg": attrs.evolve(SMALL, downsample="avg", linear_out=True), "output_stride": 8},
        {"cfg": attrs.evolve(SMALL, downsample=None)},
    ],
    ids=["default", "avg_linear_out_os8", "no_shortcut"],
)
def test_surface_script_and_fx(kwargs: dict[str, object]) -> None:
    check_script_and_fx(small(**kwargs), X)


def test_grad_checkpointing_changes_nothing_but_memory() -> None:
    check_grad_checkpointing(small(), images(2))


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
    ],
)
def test_cfg_checks_its_fields(fields: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        attrs.evolve(SMALL, **fields)  # type: ignore[arg-type]  # the checks under test see the real values


def test_pretrained_checkpoint_loads(server: CheckpointServer, cache_dir: Path) -> None:
    check_pretrained("regnetx_016", server, cache_dir)
