"""DenseNet: reference taps, knobs (memory_efficient, pooling, drop rates, in_chans), argument checks, surface."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from model_checks import (
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
from weights_support import CheckpointServer
from zoo.archs.densenet import DenseLayer, DenseNet
from zoo.archs.layers import BlurPool2d

X = images(2)
X1 = X[:1]  # the full-size models run on one image


def built(name: str) -> DenseNet:
    """The session's one build of name (tests/modelcache.py)."""
    return built_as(name, DenseNet)


def small(**kwargs: object) -> DenseNet:
    """A two-block DenseNet small enough to train a step in milliseconds."""
    return small_model(DenseNet, {"growth_rate": 8, "block_config": (2, 3), "num_classes": 5}, kwargs)


@pytest.mark.drawn_names(family="densenet")  # the run's drawn densenet names (tests/tiers.py)
def test_feature_info_matches_reference(name: str) -> None:
    model = meta_model(name, DenseNet)
    check_reference_taps(model, name)


def test_surface_forward_intermediates() -> None:
    check_intermediates(built("densenetblur121d"), X1, later="features.denseblock4")


def test_surface_prune() -> None:
    check_prune(built("densenet121"), X1)


def test_surface_script_and_fx() -> None:
    check_script_and_fx(built("densenetblur121d"), X1)


def test_memory_efficient_changes_nothing_but_memory() -> None:
    check_grad_checkpointing(small(), X)
    # the constructor argument is the same switch
    efficient = small(memory_efficient=True)
    assert all(m.grad_checkpointing for m in efficient.modules() if isinstance(m, DenseLayer))

    check_grad_checkpointing(efficient, X, lambda model: model.set_grad_checkpointing(False))
    with pytest.raises(zoo.ZooError, match="enable"):
        efficient.set_grad_checkpointing("yes")  # type: ignore[arg-type]  # what a caller could pass


def test_memory_efficient_through_the_facade() -> None:
    model = zoo.create_model("densenet121", memory_efficient=True, num_classes=3)
    layers = [m for m in model.modules() if isinstance(m, DenseLayer)]
    assert len(layers) == 58
    assert all(m.grad_checkpointing for m in layers)


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax", "catavgmax"])
def test_global_pool(pool: str) -> None:
    model = small(global_pool=pool).eval()
    with torch.no_grad():
        feats = model.forward_features(X)
        pooled = model.forward_head(feats, pre_logits=True)
        assert model(X).shape == (2, 5)
    assert pooled.shape == (2, model.head_hidden_size)
    assert model.head_hidden_size == model.num_features * (2 if pool == "catavgmax" else 1)


def test_unpooled_map_and_reset_classifier() -> None:
    model = small(global_pool="", num_classes=0).eval()
    with torch.no_grad():
        fmap = model(X)
    assert fmap.shape == (2, model.num_features, 8, 8)  # two blocks: stride 8
    model.reset_classifier(11, "avg")
    assert model(X).shape == (2, 11)
    assert model.get_classifier() is model.classifier
    with pytest.raises(zoo.ZooError, match="global_pool"):
        model.reset_classifier(3, "")
    assert model.num_classes == 11  # a refused reset changes nothing


def test_drop_rates_only_in_training() -> None:
    model = small(drop_rate=0.5, proj_drop_rate=0.3)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(X), model(X))
        model.train()
        torch.manual_seed(1)
        first = model(X)
        torch.manual_seed(2)
        assert not torch.equal(first, model(X))


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(in_chans: int) -> None:
    model = small(in_chans=in_chans).eval()
    stem = model.get_submodule("features.conv0")
    assert isinstance(stem, nn.Conv2d)
    assert stem.in_channels == in_chans
    assert model(torch.randn(1, in_chans, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"growth_rate": 0}, "growth_rate"),
        ({"block_config": ()}, "block_config"),
        ({"block_config": (2, 0)}, "block_config"),
        ({"block_config": "66"}, "block_config"),
        ({"bn_size": 0}, "bn_size"),
        ({"stem_type": "wide"}, "stem_type"),
        ({"stem_type": "deep_tiered", "growth_rate": 2}, "growth_rate"),
        ({"aa_layer": "gauss"}, "aa_layer"),
        ({"aa_stem_only": 1}, "aa_stem_only"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"proj_drop_rate": -0.1}, "proj_drop_rate"),
        ({"memory_efficient": "yes"}, "memory_efficient"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": -1}, "num_classes"),
        ({"global_pool": "mean"}, "global_pool"),
        ({"global_pool": ""}, "global_pool"),  # a classifier needs pooled input
    ],
)
def test_invalid_arguments_name_themselves(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        small(**kwargs)


def test_tiered_stems_and_blur_transitions_build() -> None:
    for stem in ("deep_tiered", "deep_tiered_narrow"):
        model = small(stem_type=stem).eval()
        assert model(X).shape == (2, 5)
    blurred = small(aa_layer="blur", aa_stem_only=False)
    pools = [m for m in blurred.modules() if isinstance(m, BlurPool2d)]
    assert len(pools) == 2  # the stem's and the one transition's
    assert "filt" not in "".join(blurred.state_dict())  # the fixed filter is not a checkpoint key


def test_blur_pool_is_a_normalised_low_pass_filter() -> None:
    pool = BlurPool2d(3, filt_size=3, stride=2)
    flat = torch.full((1, 3, 9, 9), 2.5)
    torch.testing.assert_close(pool(flat), torch.full((1, 3, 5, 5), 2.5))  # reflect padding keeps constants
    # a single bright pixel spreads as the binomial [1, 2, 1] x [1, 2, 1] / 16
    spike = torch.zeros(1, 3, 9, 9)
    spike[..., 4, 4] = 16.0
    out = pool(spike)[0, 0]
    assert out[2, 2].item() == pytest.approx(4.0)
    assert out.sum().item() == pytest.approx(4.0)  # stride 2 keeps one tap of the kernel's centre row/column


@pytest.mark.parametrize("name", ["densenet121"])
def test_pretrained_checkpoint_loads(name: str, server: CheckpointServer, cache_dir: Path) -> None:
    check_pretrained(name, server, cache_dir)
