"""ResNet knobs: pooling, output stride, dropout, stochastic depth, input channels, classifier resets."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import zoo
from zoo.archs.layers import DropPath
from zoo.archs.resnet import ResNet


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
