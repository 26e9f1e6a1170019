"""Aligned Xception: reference taps, output_stride, drop rates, in_chans, argument checks, surface."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from model_checks import (
    FACTORY,
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
    taps_by_hooks,
)
from modelcache import built_as
from weights_support import CheckpointServer
from zoo.archs.catalogue import FAMILIES
from zoo.archs.layers import BatchNormAct2d, DropPath
from zoo.archs.xception import BlockCfg, XceptionAligned
from zoo.domain.values import FeatureCfg

NAMES = FAMILIES["zoo.archs.xception"]
X = images()


def built(name: str) -> XceptionAligned:
    """The session's one build of name (tests/modelcache.py)."""
    return built_as(name, XceptionAligned)


def small(**kwargs: object) -> XceptionAligned:
    """Entry, one middle and exit-like blocks at small widths: a training step in milliseconds."""
    cfg = (
        BlockCfg(64, (16, 16, 16), 2),
        BlockCfg(16, (16, 16, 16)),
        BlockCfg(16, (24, 32, 32), 2),
        BlockCfg(32, (32, 32, 48), 1, no_skip=True, start_with_relu=False),
    )
    return small_model(XceptionAligned, {"block_cfg": cfg, "num_classes": 5}, kwargs)


@pytest.mark.drawn_names(family="xception")  # the run's drawn xception names (tests/tiers.py)
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_feature_info(name: str, output_stride: int) -> None:
    model = meta_model(name, XceptionAligned, output_stride=output_stride)
    check_reference_taps(model, name, output_stride=output_stride)


@pytest.mark.parametrize("name", ["xception41", "xception41p"])
def test_surface_forward_intermediates(name: str) -> None:
    check_intermediates(built(name), X, later="blocks.12")


def test_surface_prune() -> None:
    check_prune(built("xception41p"), X)


def test_prune_leaves_the_source_model_whole() -> None:
    model = built("xception41")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(X)
    clone = small()
    clone.prune_intermediate_layers(1)  # the last tap only: nothing to drop, the head goes
    assert clone.get_classifier().__class__ is nn.Identity
    # what the feature extractors do: a shallow copy, pruned
    shallow = XceptionAligned.__new__(XceptionAligned)
    shallow.__dict__ = dict(model.__dict__)
    for table in ("_modules", "_parameters", "_buffers"):
        object.__setattr__(shallow, table, dict(getattr(model, table)))
    shallow.prune_intermediate_layers([0, 2])
    with torch.no_grad():
        assert torch.equal(model(X), expected)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in before.items()}
    assert model.num_classes == 1000


@pytest.mark.parametrize("preact", [False, True])
def test_surface_script_and_fx(preact: bool) -> None:
    check_script_and_fx(small(preact=preact, drop_path_rate=0.1), X)


@pytest.mark.parametrize("preact", [False, True])
def test_grad_checkpointing_changes_nothing_but_memory(preact: bool) -> None:
    check_grad_checkpointing(small(preact=preact), images(2))
    model = small(preact=preact)
    with pytest.raises(zoo.ZooError, match="enable"):
        model.set_grad_checkpointing(None)  # type: ignore[arg-type]  # what a caller could pass


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_dilates_instead_of_striding(output_stride: int) -> None:
    model = small(output_stride=output_stride).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 64, 64))
    assert feats.shape[-1] == 64 // min(output_stride, 8)  # the small model strides 8 at most
    dilations = [m.dilation[0] for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert max(dilations) == max(1, 8 // output_stride)


def test_output_stride_of_a_full_model() -> None:
    model = zoo.create_model("xception41", output_stride=8, num_classes=0).eval()
    with torch.no_grad():
        assert model.forward_features(X).shape == (1, 2048, 8, 8)


def test_preact_taps_come_before_the_final_activation() -> None:
    model = small(preact=True).eval()
    with torch.no_grad():
        final, taps = model.forward_intermediates(X)
        assert (taps[-1] < 0).any()
        assert torch.equal(final, torch.relu(taps[-1]))
        normed = model.forward_intermediates(X, norm=True, intermediates_only=True)
        assert isinstance(normed, list)
        assert torch.equal(normed[-1], final)


def test_batch_norm_settings_follow_the_reference() -> None:
    eps = {name: {m.eps for m in built(name).modules() if isinstance(m, nn.BatchNorm2d)} for name in NAMES}
    # the TensorFlow-ported models use eps 1e-3; xception41p was trained with PyTorch's default
    assert eps == {name: {1e-5} if name == "xception41p" else {1e-3} for name in NAMES}
    assert all(isinstance(m, BatchNormAct2d) for m in built("xception41").modules() if isinstance(m, nn.BatchNorm2d))


def test_drop_path_rate_grows_with_depth() -> None:
    model = small(drop_path_rate=0.3)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.1, 0.2, 0.3])  # the first block at 0 has none
    model.train()
    torch.manual_seed(0)
    first = model(torch.randn(4, 3, 32, 32))
    assert first.shape == (4, 5)


def test_drop_rate_only_in_training() -> None:
    check_drop_rate_only_in_training(small(drop_rate=0.5), X)


def test_classifier_reset_and_pooling() -> None:
    check_classifier_reset_and_pooling(small(global_pool="catavgmax"), X)


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(in_chans: int) -> None:
    model = small(in_chans=in_chans).eval()
    assert model(torch.randn(1, in_chans, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"output_stride": 4}, "output_stride"),
        ({"output_stride": 16.0}, "output_stride"),
        ({"preact": "no"}, "preact"),
        ({"bn_eps": -1.0}, "bn_eps"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"drop_path_rate": 2}, "drop_path_rate"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"global_pool": "mean"}, "global_pool"),
        ({"block_cfg": ()}, "block_cfg"),
        ({"block_cfg": (BlockCfg(32, (16, 16, 16)),)}, "in_chs"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        small(**kwargs)


def test_block_cfg_checks_its_fields() -> None:
    with pytest.raises(zoo.ZooError, match="stride"):
        BlockCfg(64, (16, 16, 16), 3)
    with pytest.raises(zoo.ZooError, match="out_chs"):
        BlockCfg(64, (16, 16))  # type: ignore[arg-type]  # what a caller could pass


def test_pretrained_checkpoint_loads(server: CheckpointServer, cache_dir: Path) -> None:
    check_pretrained("xception41", server, cache_dir)


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_list_and_dict_extractors_read_taps_inside_blocks(kind: str) -> None:
    model = built("xception41")
    extractor = FACTORY.wrap(model, FeatureCfg(flatten_sequential=True), out_indices=(0, 2), feature_cls=kind)
    # the taps sit inside residual blocks: the extractor keeps the blocks up to the one holding the last tap
    assert [n for n, _ in extractor.named_children()][-1] == "blocks_2"
    with torch.no_grad():
        out = extractor(X)
        expected = taps_by_hooks(model, X)
    tensors = list(out.values()) if isinstance(out, dict) else out
    assert all(torch.equal(a, b) for a, b in zip(tensors, [expected[0], expected[2]], strict=True))
    if isinstance(out, dict):
        assert list(out) == ["0", "2"]
