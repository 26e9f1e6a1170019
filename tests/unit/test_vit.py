"""Vision Transformer: reference taps, taps as maps, image sizes, pos-embed resampling, extractors, surface."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.fx
from torch import nn

import zoo
from model_checks import (
    check_drop_rate_only_in_training,
    check_grad_checkpointing,
    check_reference_taps,
    check_script_and_fx,
    images,
    meta_model,
    small_model,
)
from weights_support import CheckpointServer, safetensors_bytes
from zoo.api import default_zoo
from zoo.archs.layers import DropPath
from zoo.archs.layers.layer_scale import LayerScale
from zoo.archs.layers.pos_embed import resample_abs_pos_embed
from zoo.archs.vit import VisionTransformer, checkpoint_filter
from zoo.domain.errors import CheckpointMismatchError, InvalidFeatureRequestError, InvalidValueError
from zoo.services.features import FeatureFactory, FeatureGetterNet

# 32 x 48 px in 8 px patches: a 4 x 6 grid, so a transposed layout would show
X = images(2, 32, 48)


def small(**kwargs: object) -> VisionTransformer:
    """Three blocks 32 wide on a 4 x 6 grid of 8 px patches: a training step in milliseconds."""
    defaults = {"img_size": (32, 48), "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2, "num_classes": 5}
    return small_model(VisionTransformer, defaults, kwargs)


def hooked_blocks(model: VisionTransformer, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output tokens, read by forward hooks during forward_features."""
    seen: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda _m, _a, out: seen.append(out)) for b in model.blocks]
    try:
        with torch.no_grad():
            model.forward_features(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def on_grid(tokens: torch.Tensor, h: int, w: int, prefix: int = 1) -> torch.Tensor:
    """[B, prefix + h * w, C] tokens -> [B, C, h, w], row-major patches (written out, not the model's code)."""
    b, _, c = tokens.shape
    out = torch.empty(b, c, h, w)
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = tokens[:, prefix + i * w + j]
    return out


@pytest.mark.drawn_names(family="vit")  # the run's drawn vit names (tests/tiers.py)
def test_feature_info_and_widths_follow_the_reference(name: str) -> None:
    model = meta_model(name, VisionTransformer)
    check_reference_taps(model, name)
    assert zoo.api.default_zoo().get_spec(name).feature_cfg.feature_cls == "getter"


def test_taps_are_the_blocks_laid_out_on_the_patch_grid() -> None:
    model = small().eval()
    blocks = hooked_blocks(model, X)
    with torch.no_grad():
        final, taps = model.forward_intermediates(X)
        assert torch.equal(final, model.forward_features(X))
        for tap, tokens in zip(taps, blocks, strict=True):
            assert tap.shape == (2, 32, 4, 6)
            torch.testing.assert_close(tap, on_grid(tokens, 4, 6), rtol=0, atol=0)
        nhwc = model.forward_intermediates(X, [0], output_fmt="NHWC", intermediates_only=True)
        assert torch.equal(nhwc[0], taps[0].permute(0, 2, 3, 1))
        nlc = model.forward_intermediates(X, [-1], output_fmt="NLC", intermediates_only=True)
        assert torch.equal(nlc[0], blocks[-1][:, 1:])
        # norm: the final norm on every tap, as timm does
        normed = model.forward_intermediates(X, [0, 2], norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], on_grid(model.norm(blocks[0]), 4, 6), rtol=0, atol=0)
        torch.testing.assert_close(normed[1], on_grid(final, 4, 6), rtol=0, atol=0)


def test_stop_early_runs_no_block_past_the_last_tap() -> None:
    model = small().eval()
    blocks = hooked_blocks(model, X)
    calls: list[int] = []
    handle = model.blocks[2].register_forward_hook(lambda *_: calls.append(2))
    try:
        with torch.no_grad():
            model.forward_intermediates(X, [0], intermediates_only=True)
            final, (tap,) = model.forward_intermediates(X, [1], stop_early=True)
    finally:
        handle.remove()
    assert calls == []
    assert torch.equal(final, model.norm(blocks[1]))  # the final features are the norm of the last block run
    assert torch.equal(tap, on_grid(blocks[1], 4, 6))


def test_a_fixed_size_model_refuses_other_sizes_clearly() -> None:
    model = small().eval()
    wrong = torch.randn(1, 3, 48, 32)
    with pytest.raises(InvalidValueError, match=r"48x32 .*img_size=32x48.*dynamic_img_size=True"):
        model(wrong)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(X), model(X), rtol=0, atol=0)
    with pytest.raises(InvalidValueError, match="48x32"):
        traced(wrong)  # the check is a leaf of the graph: it runs on real shapes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(X), model(X), rtol=1e-5, atol=1e-5)
    # TorchScript raises its own error type, carrying the message
    with pytest.raises(torch.jit.Error, match="img_size=32x48"):
        scripted(wrong)


def test_dynamic_img_size_equals_a_model_built_for_the_size() -> None:
    # checkpoints' grids are square (the filter refuses others): a 4 x 4 one here
    dynamic = small(img_size=32, dynamic_img_size=True).eval()
    sized = small(img_size=(24, 40)).eval()
    state = checkpoint_filter(dynamic.state_dict(), sized)  # the load-time resampling of pos_embed
    sized.load_state_dict(state)
    x = torch.randn(1, 3, 24, 40)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(x), sized(x), rtol=0, atol=0)
        taps = dynamic.forward_intermediates(x, intermediates_only=True)
        assert [t.shape for t in taps] == [(1, 32, 3, 5)] * 3
        # the native size leaves the embeddings as they are
        native = torch.randn(1, 3, 32, 32)
        assert torch.equal(dynamic(native), small(img_size=32)(native))
    with pytest.raises(InvalidValueError, match=r"multiples of the patch size 8x8.*dynamic_img_pad=True"):
        dynamic(torch.randn(1, 3, 30, 40))


def test_dynamic_img_pad_pads_to_whole_patches() -> None:
    model = small(dynamic_img_size=True, dynamic_img_pad=True).eval()
    x = torch.randn(1, 3, 30, 41)
    with torch.no_grad():
        taps = model.forward_intermediates(x, [0], intermediates_only=True)
        padded = torch.nn.functional.pad(x, [0, 7, 0, 2])
        assert taps[0].shape == (1, 32, 4, 6)
        torch.testing.assert_close(model(x), model(padded), rtol=0, atol=0)


def test_pos_embed_resampling_keeps_prefix_and_interpolates_the_grid() -> None:
    grid = torch.arange(2.0 * 3).reshape(1, 6, 1).repeat(1, 1, 4)
    posemb = torch.cat([torch.full((1, 1, 4), -7.0), grid], dim=1)
    same = resample_abs_pos_embed(posemb, [2, 3], [2, 3], 1)
    assert same is posemb
    up = resample_abs_pos_embed(posemb, [4, 6], [2, 3], 1, interpolation="bilinear", antialias=False)
    assert up.shape == (1, 1 + 24, 4)
    assert torch.equal(up[:, 0], posemb[:, 0])
    # a linear ramp stays monotone along each row, and within the old range
    rows = up[0, 1:, 0].reshape(4, 6)
    assert (rows.diff(dim=1) >= 0).all()
    assert rows.min() >= 0.0
    assert rows.max() <= 5.0


def test_a_checkpoint_of_another_grid_is_resampled_on_loading(server: CheckpointServer, cache_dir: Path) -> None:
    torch.manual_seed(0)
    source = zoo.create_model("vit_tiny_patch16_224").eval()
    assert isinstance(source, VisionTransformer)
    url = server.add("/timm/vit_tiny.safetensors", safetensors_bytes(source.state_dict()))
    overlay = {"url": url, "hf_hub_id": ""}
    model = (
        default_zoo()
        .create_model("vit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=overlay, img_size=64)
        .eval()
    )
    assert isinstance(model, VisionTransformer)
    expected = resample_abs_pos_embed(source.pos_embed.detach(), [4, 4], [14, 14], 1)
    assert torch.equal(model.pos_embed.detach(), expected)
    # the source model, resampling on the fly, computes the same on 64 px images
    dynamic = (
        default_zoo()
        .create_model("vit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=overlay, dynamic_img_size=True)
        .eval()
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), dynamic(x), rtol=0, atol=0)


def test_a_pos_embed_that_cannot_be_resampled_is_refused() -> None:
    model = small()
    state = model.state_dict()
    for bad in (torch.zeros(1, 1 + 10, 32), torch.zeros(1, 1 + 16, 31), torch.zeros(17, 32)):
        with pytest.raises(CheckpointMismatchError, match="pos_embed"):
            checkpoint_filter({**state, "pos_embed": bad}, model)


def test_extractors_getter_only() -> None:
    model = small().eval()
    with torch.device("meta"):  # structure only
        extractor = zoo.create_model("vit_tiny_patch16_224", features_only=True, out_indices=(1, 3))
    assert isinstance(extractor, FeatureGetterNet)
    # the copy keeps what the taps need: no later blocks, final norm or head
    kept = set(extractor.state_dict())
    assert not any(k.startswith(("model.blocks.4.", "model.norm.", "model.head.")) for k in kept)
    assert any(k.startswith("model.blocks.3.") for k in kept)
    for kind in ("list", "dict", "hook"):
        with torch.device("meta"), pytest.raises(InvalidFeatureRequestError, match=f"'{kind}'.*feature_cls='getter'"):
            zoo.create_model("vit_tiny_patch16_224", features_only=True, feature_cls=kind)
    with torch.no_grad():
        taps = (
            FeatureFactory()
            .wrap(model, zoo.api.default_zoo().get_spec("vit_tiny_patch16_224").feature_cfg, out_indices=(0, 2))
            .forward_taps(X)
        )
        expected = model.forward_intermediates(X, (0, 2), intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(taps, expected, strict=True))


@pytest.mark.parametrize("pool", ["token", "avg", "avgmax", "max"])
def test_pooling_and_where_the_final_norm_goes(pool: str) -> None:
    model = small(global_pool=pool).eval()
    keys = set(model.state_dict())
    # pooled patch tokens are normalised after pooling (fc_norm), the class token before (norm)
    assert ("fc_norm.weight" in keys) == (pool != "token")
    assert ("norm.weight" in keys) == (pool == "token")
    with torch.no_grad():
        feats = model.forward_features(X)
        pre = model.forward_head(feats, pre_logits=True)
        patches = feats[:, 1:]
        pooled = {
            "token": feats[:, 0],
            "avg": patches.mean(1),
            "max": patches.amax(1),
            "avgmax": 0.5 * (patches.mean(1) + patches.amax(1)),
        }[pool]
        torch.testing.assert_close(pre, model.fc_norm(pooled), rtol=0, atol=0)
        assert model(X).shape == (2, 5)


def test_reset_classifier_and_refusals_leave_the_model_whole() -> None:
    model = small().eval()
    head = model.get_classifier()
    for num_classes, pool in ((3, "catavgmax"), (3, "map"), (3, ""), (-1, None), (2.0, None)):
        with pytest.raises(zoo.ZooError, match=r"global_pool|num_classes"):
            model.reset_classifier(num_classes, pool)  # type: ignore[arg-type]  # what a caller could pass
    assert model.get_classifier() is head
    assert (model.num_classes, model.global_pool) == (5, "token")
    model.reset_classifier(0, "")
    with torch.no_grad():
        assert model(X).shape == (2, 1 + 24, 32)  # the whole token sequence
    model.reset_classifier(7, "avg")
    assert model(X).shape == (2, 7)
    assert model.head_hidden_size == 32


@pytest.mark.parametrize(
    ("kwargs", "pools"),
    [
        ({}, ("token", "avg", "avgmax", "max", "")),
        ({"class_token": False, "global_pool": "avg"}, ("avg", "avgmax", "max", "")),
        ({"class_token": False, "reg_tokens": 1, "global_pool": "map"}, ("avg", "avgmax", "max", "map", "")),
        ({"global_pool": "map"}, ("token", "avg", "avgmax", "max", "map", "")),
    ],
)
def test_global_pools_are_the_poolings_reset_classifier_takes(
    kwargs: dict[str, object], pools: tuple[str, ...]
) -> None:
    model = small(**kwargs).eval()
    assert model.global_pools == pools
    for pool in pools:  # each one advertised is taken ...
        clone = small(**kwargs)
        clone.load_state_dict(model.state_dict())
        clone.reset_classifier(0 if pool == "" else 3, pool)
        assert clone.global_pool == pool
        with torch.no_grad():
            assert clone(X).shape == ((2, clone.num_prefix_tokens + 24, 32) if pool == "" else (2, 3))
    head = model.get_classifier()
    for pool in ("token", "map", "catavgmax", "avg2"):
        if pool in pools:
            continue
        # ... and each other one refused, naming the value and this model's choices, the model unchanged
        listed = ", ".join(repr(p) for p in pools)
        with pytest.raises(InvalidValueError, match=rf"global_pool={pool!r}.*expected one of {listed}$"):
            model.reset_classifier(3, pool)
        assert model.get_classifier() is head
        assert model.global_pool == kwargs.get("global_pool", "token")
        assert model.global_pools == pools


def test_a_map_model_that_pools_otherwise_no_longer_offers_map() -> None:
    model = small(class_token=False, global_pool="map")
    model.reset_classifier(3, "avg")
    assert model.global_pools == ("avg", "avgmax", "max", "")
    model.prune_intermediate_layers(1)  # the head pruned: pooling '' without a classifier
    assert (model.global_pool, model.global_pools) == ("", ("avg", "avgmax", "max", ""))


def test_without_a_class_token() -> None:
    model = small(class_token=False, global_pool="avg").eval()
    assert model.num_prefix_tokens == 0
    assert "cls_token" not in model.state_dict()
    with torch.no_grad():
        taps = model.forward_intermediates(X, intermediates_only=True)
        assert torch.equal(taps[-1], on_grid(hooked_blocks(model, X)[-1], 4, 6, prefix=0))
    with pytest.raises(InvalidValueError, match="class token"):
        small(class_token=False)  # global_pool='token' by default


def test_prune_intermediate_layers() -> None:
    model = small().eval()
    with torch.no_grad():
        taps = model.forward_intermediates(X, intermediates_only=True)
    with pytest.raises(zoo.ZooError, match="indices"):
        model.prune_intermediate_layers([0, 3])
    assert len(model.blocks) == 3
    assert model.prune_intermediate_layers([0, 1], prune_norm=True) == [0, 1]
    assert len(model.blocks) == 2
    assert len(model.feature_info) == 2
    assert isinstance(model.norm, nn.Identity)
    assert isinstance(model.get_classifier(), nn.Identity)
    with torch.no_grad():
        again = model.forward_intermediates(X, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(again, taps[:2], strict=True))
        assert model(X).shape == (2, 1 + 24, 32)


def test_script_and_fx() -> None:
    # the fixed-size path is scripted and traced in test_a_fixed_size_model_refuses_other_sizes_clearly
    model = small(dynamic_img_size=True, dynamic_img_pad=True, drop_path_rate=0.1, init_values=1e-3)
    check_script_and_fx(model, torch.randn(1, 3, 20, 44))


def test_grad_checkpointing_changes_nothing_but_memory() -> None:
    check_grad_checkpointing(small(), X)
    model, plain = small(), small()
    model.set_grad_checkpointing()
    final, taps = model.forward_intermediates(X)
    final_p, taps_p = plain.forward_intermediates(X)
    loss = final.sum() + torch.stack([t.square().sum() for t in taps]).sum()
    loss_p = final_p.sum() + torch.stack([t.square().sum() for t in taps_p]).sum()
    torch.autograd.backward([loss, loss_p])
    for (k, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=k)


def test_drop_rate_only_in_training() -> None:
    check_drop_rate_only_in_training(small(drop_rate=0.5), X)


def test_layer_scale_and_drop_path() -> None:
    model = small(init_values=0.1, drop_path_rate=0.2)
    keys = set(model.state_dict())
    assert {"blocks.0.ls1.gamma", "blocks.0.ls2.gamma"} <= keys
    scales = [m for m in model.modules() if isinstance(m, LayerScale)]
    assert len(scales) == 6
    assert all(torch.equal(m.gamma, torch.full((32,), 0.1)) for m in scales)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.1, 0.1, 0.2, 0.2])  # attention and MLP branches; none in the first block


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(in_chans: int) -> None:
    model = small(in_chans=in_chans).eval()
    assert model(torch.randn(1, in_chans, 32, 48)).shape == (1, 5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"img_size": 4}, "img_size"),
        ({"img_size": (32, 48, 3)}, "img_size"),
        ({"img_size": "224"}, "img_size"),
        ({"patch_size": 0}, "patch_size"),
        ({"num_heads": 3}, "num_heads"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"depth": 0}, "depth"),
        ({"mlp_ratio": 0.0}, "mlp_ratio"),
        ({"global_pool": "catavgmax"}, "global_pool"),
        ({"global_pool": "token", "class_token": False, "reg_tokens": 2}, "global_pool"),
        ({"reg_tokens": -1}, "reg_tokens"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"act_layer": "relu"}, "act_layer"),
        ({"mlp_layer": "moe"}, "mlp_layer"),
        ({"mlp_layer": "glu", "mlp_ratio": 1.5 / 32}, "even"),
        ({"pre_norm": 1}, "pre_norm"),
        ({"no_embed_class": "no"}, "no_embed_class"),
        ({"global_pool": "", "num_classes": 5}, "global_pool"),
        ({"dynamic_img_size": "yes"}, "dynamic_img_size"),
        ({"dynamic_img_pad": 1}, "dynamic_img_pad"),
        ({"class_token": None}, "class_token"),
        ({"fc_norm": "no"}, "fc_norm"),
        ({"init_values": -1.0}, "init_values"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"attn_drop_rate": -0.1}, "attn_drop_rate"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": 2.5}, "num_classes"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        small(**kwargs)


def test_img_size_reaches_the_model_through_create_model() -> None:
    with torch.device("meta"):
        model = zoo.create_model("vit_small_patch16_224", img_size=(96, 128))
    assert isinstance(model, VisionTransformer)
    assert model.pos_embed.shape == (1, 1 + 6 * 8, 384)
    with pytest.raises(zoo.ZooError, match="img_size"):
        zoo.create_model("vit_small_patch16_224", img_size=8)


def test_the_cfg_describes_the_img_size_built_for_so_preprocessing_feeds_it() -> None:
    from PIL import Image

    from zoo.data import create_transform, resolve_data_config

    model = zoo.create_model("vit_tiny_patch16_224", img_size=(64, 96), depth=1).eval()
    assert model.pretrained_cfg.input_size == (3, 64, 96)
    assert model.pretrained_cfg.test_input_size is None
    data_cfg = resolve_data_config(model)
    assert data_cfg.input_size == (3, 64, 96)
    # what zoo's own preprocessing makes of a picture, the model (not built for dynamic sizes) takes
    x = create_transform(data_cfg)(Image.new("RGB", (300, 200), (120, 80, 40))).unsqueeze(0)
    assert tuple(x.shape) == (1, 3, 64, 96)
    assert model(x).shape == (1, 1000)
    assert zoo.create_model("vit_tiny_patch16_224", depth=1).pretrained_cfg.input_size == (3, 224, 224)
    assert (
        zoo.create_model("resnet18").pretrained_cfg.input_size
        == default_zoo().get_spec("resnet18").get_cfg("").input_size
    )


def test_register_tokens_map_head_and_pre_norm() -> None:
    model = small(class_token=False, reg_tokens=2, no_embed_class=True, global_pool="map", pre_norm=True).eval()
    # register tokens join after the position embeddings, which cover the patches alone
    assert model.pos_embed.shape == (1, 24, 32)
    assert model.reg_token is not None
    assert model.reg_token.shape == (1, 2, 32)
    assert model.patch_embed.proj.bias is None  # a pre-norm (CLIP) patch projection has no bias
    assert isinstance(model.norm_pre, nn.LayerNorm)
    with torch.no_grad():
        final, taps = model.forward_intermediates(X)
        assert final.shape == (2, 2 + 24, 32)
        assert all(t.shape == (2, 32, 4, 6) for t in taps)  # the register tokens are dropped from the maps
        torch.testing.assert_close(taps[-1], on_grid(hooked_blocks(model, X)[-1], 4, 6, prefix=2), rtol=0, atol=0)
        assert model(X).shape == (2, 5)
    model.reset_classifier(3, "avg")  # another pooling drops the attention pool for good
    assert isinstance(model.attn_pool, nn.Identity)
    with pytest.raises(InvalidValueError, match="map"):
        model.reset_classifier(3, "map")
    assert model.global_pool == "avg"
