"""ResNet knobs: pooling, output stride, dropout, stochastic depth, input channels, classifier resets,
stems, anti-aliasing, group norm and per-stage blocks."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import zoo
from zoo.archs.layers import DropPath, SEModule
from zoo.archs.resnet import ResNet
from zoo.archs.resnet_blocks import BasicBlock, Bottleneck
from zoo.domain.errors import ZooError


@pytest.fixture(scope="module")
def r18() -> ResNet:
    model = zoo.create_model("resnet18d")
    assert isinstance(model, ResNet)
    return model.eval()


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax", "catavgmax"])
def test_global_pool_types(pool: str) -> None:
    model = zoo.create_model("resnet18", global_pool=pool, num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    pooled = model.forward_head(feats, pre_logits=True)
    expected = {
        "avg": feats.mean((2, 3)),
        "max": feats.amax((2, 3)),
        "avgmax": 0.5 * (feats.mean((2, 3)) + feats.amax((2, 3))),
        "catavgmax": torch.cat([feats.mean((2, 3)), feats.amax((2, 3))], 1),
    }[pool]
    torch.testing.assert_close(pooled, expected)
    assert model(x).shape == (2, 4)


@pytest.mark.parametrize(("name", "output_stride"), [("resnet18", 8), ("resnet50d", 16), ("resnet26d", 8)])
def test_output_stride_dilates_instead_of_striding(name: str, output_stride: int) -> None:
    model = zoo.create_model(name, output_stride=output_stride).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 64, 64))
    assert feats.shape[-2:] == (64 // output_stride, 64 // output_stride)
    assert max(t.reduction for t in model.feature_info) == output_stride
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_drop_rate_only_in_training() -> None:
    model = zoo.create_model("resnet18", drop_rate=0.5, num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        feats = model.forward_features(x)
        model.train()
        pooled = [model.forward_head(feats, pre_logits=True) for _ in range(2)]
    assert (pooled[0] == 0).any()
    assert not torch.equal(pooled[0], pooled[1])


def test_drop_path_rate_grows_with_depth() -> None:
    model = zoo.create_model("resnet26", drop_path_rate=0.2)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert len(rates) == 7  # 8 blocks, the first at rate 0 has no DropPath
    assert rates == sorted(rates)
    assert rates[-1] == pytest.approx(0.2)
    with pytest.raises(zoo.ZooError, match="drop_path_rate"):
        zoo.create_model("resnet26", drop_path_rate=1.5)


@pytest.mark.parametrize("in_chans", [1, 2, 5])
def test_in_chans(in_chans: int) -> None:
    model = zoo.create_model("resnet18d", in_chans=in_chans, num_classes=2).eval()
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == in_chans
    assert model(torch.randn(1, in_chans, 64, 64)).shape == (1, 2)


def test_reset_classifier(r18: ResNet) -> None:
    model = copy.deepcopy(r18)
    x = torch.randn(2, 3, 64, 64)
    model.reset_classifier(10)
    assert model(x).shape == (2, 10)
    assert model.num_classes == 10
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, model.num_features, 2, 2)
    with pytest.raises(zoo.ZooError, match="global_pool"):
        model.reset_classifier(5)
    assert model.num_classes == 0
    with pytest.raises(zoo.ZooError, match="global_pool"):
        model.reset_classifier(5, "mean")
    model.reset_classifier(5, "max")
    assert model(x).shape == (2, 5)
    assert model.get_classifier() is model.fc


def test_model_surface(r18: ResNet) -> None:
    assert r18.num_features == 512
    assert r18.num_classes == 1000
    assert [t.module for t in r18.feature_info] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(r18(x), r18.forward_head(r18.forward_features(x)))


@pytest.mark.parametrize("name", ["resnetaa50", "resnetaa50d", "resnetblur50"])
@pytest.mark.parametrize("output_stride", [32, 8])
def test_anti_aliased_models_take_odd_sizes(name: str, output_stride: int) -> None:
    # the reference's average-pool anti-aliasing fails on odd maps (its shortcut rounds up); zoo's rounds up too
    model = zoo.create_model(name, layers=(1, 1, 1, 1), output_stride=output_stride, num_classes=3).eval()
    with torch.no_grad():
        for size in (33, 35, 37, 64):
            assert model(torch.randn(1, 3, size, size)).shape == (1, 3)


def _resnet(name: str, **kwargs: Any) -> ResNet:
    model = zoo.create_model(name, **kwargs)
    assert isinstance(model, ResNet)
    return model


def _first_block(stage: nn.Sequential) -> Bottleneck:
    block = stage[0]
    assert isinstance(block, Bottleneck)
    return block


@pytest.mark.parametrize(
    ("name", "widths"),
    [
        ("resnet10t", (24, 32, 64)),
        ("resnet50c", (32, 32, 64)),
        ("resnet50s", (64, 64, 128)),
        ("senet154", (64, 64, 128)),
    ],
)
def test_deep_stem_widths(name: str, widths: tuple[int, int, int]) -> None:
    with torch.device("meta"):
        model = _resnet(name, layers=(1, 1, 1, 1))
    stem = model.conv1
    assert isinstance(stem, nn.Sequential)
    convs = [m for m in stem if isinstance(m, nn.Conv2d)]
    assert tuple(c.out_channels for c in convs) == widths
    assert model.feature_info[0].num_chs == widths[-1]


def test_senet154_halves_the_first_conv_and_widens_its_shortcuts() -> None:
    with torch.device("meta"):
        model = _resnet("senet154", layers=(1, 1, 1, 1))
    block1, block2 = _first_block(model.layer1), _first_block(model.layer2)
    assert block2.conv1.out_channels == block2.conv2.out_channels // 2
    assert isinstance(block1.downsample, nn.Sequential)
    assert isinstance(block2.downsample, nn.Sequential)
    assert block2.downsample[0].kernel_size == (3, 3)
    assert block1.downsample[0].kernel_size == (1, 1)  # no stride there: a 1x1 projection


def test_resnet_rs_convolves_instead_of_max_pooling_and_squeezes_to_a_quarter() -> None:
    model = _resnet("resnetrs50", layers=(1, 1, 1, 1)).eval()
    assert isinstance(model.maxpool, nn.Sequential)
    assert isinstance(model.maxpool[0], nn.Conv2d)
    se = _first_block(model.layer1).se
    assert isinstance(se, SEModule)
    assert se.fc1.out_channels == 256 // 4
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_group_norm_everywhere_and_refused_on_widths_it_cannot_group() -> None:
    with torch.device("meta"):
        model = zoo.create_model("resnet50_gn", layers=(1, 1, 1, 1))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(ZooError, match="groupnorm"):
        zoo.create_model("resnet50_gn", channels=(40, 128, 256, 512))


def test_blocks_per_stage() -> None:
    model = _resnet("test_resnet").eval()
    assert [type(stage[0]) for stage in (model.layer1, model.layer2, model.layer3, model.layer4)] == [
        BasicBlock,
        BasicBlock,
        Bottleneck,
        BasicBlock,
    ]
    assert model.num_features == 96
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 1000)
    with pytest.raises(ZooError, match="block="):
        zoo.create_model("test_resnet", block=(BasicBlock, Bottleneck))
    with pytest.raises(ZooError, match="stem_width"):
        zoo.create_model("resnet10t", stem_width=2)
    with pytest.raises(ZooError, match="aa_layer"):
        zoo.create_model("resnetaa50", aa_layer="max")
