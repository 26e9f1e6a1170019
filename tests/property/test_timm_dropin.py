"""What code written for timm relies on, per registered name: forward and backward at the cfg's size, the cfg
describing the model, features_only's taps, forward_intermediates, TorchScript, torch.fx (then TorchScript)
and prune_intermediate_layers.

Every case is one name and independent of the others, each kept to seconds: models come from modelcache
(built once, eval mode), computed values from small inputs under no_grad (gradients by autograd.grad, so the
shared model's .grad stays unset), shapes at the cfg's full size from a forward on the meta device (no
compute). They run on the run's drawn names (tests/tiers.py: every family each run, every name over 12
runs; every name with --all-names). Plain TorchScript of the classifier is test_surface.py's
test_scripted_model_and_extractors_agree_with_eager.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import pytest
import torch
import torch.fx
from torch import nn

import zoo
from modelcache import as_map, built, shallow, small_input_kwargs
from zoo.archs.base import ZooModule
from zoo.domain.values import DefaultCfg
from zoo.services.features import FeatureExtractor

SMALL = 64  # the input side of the value checks, and of forward/backward for models above FULL_SIZE_PARAMS
FULL_SIZE_PARAMS = 12_000_000  # models up to this size run forward and backward at their cfg's input size
# published cfgs whose pool_size is not the final map at their input size (a slip in the reference's cfg, which
# the DefaultCfg keeps, as tests/every_name checks): name.tag -> the map the model gives
POOL_SIZE_SLIPS = {"convnextv2_huge.fcmae_ft_in22k_in1k_512": (16, 16)}  # the reference says (15, 15)

pytestmark = [pytest.mark.usefixtures("one_thread")]
per_name = pytest.mark.drawn_names
scripting = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
# torch.fx.GraphModule's own __init__ annotates empty containers, which TorchScript's checker warns about
graph_module_annotations = pytest.mark.filterwarnings(
    "ignore:The TorchScript type system doesn't support instance-level annotations:UserWarning"
)


def cfgs(name: str) -> tuple[DefaultCfg, ...]:
    """Every tag's cfg of name, default first."""
    return zoo.api.default_zoo().get_spec(name).default_cfgs


@functools.cache
def image(height: int = SMALL, width: int = SMALL) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(2))


def meta_model(name: str) -> ZooModule:
    """name as registered (no small-input keywords: the cfg's own input size), on the meta device."""
    with torch.device("meta"):
        return zoo.create_model(name)


def takes_any_size(name: str, cfg: DefaultCfg) -> bool:
    """Whether modelcache's model of name runs on other input sizes than cfg's (fixed ones are built to)."""
    return not cfg.fixed_input_size or bool(small_input_kwargs(name))


def gradients(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The gradients of a loss on model(x) for x and, by name, every parameter, without touching any .grad."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    weights = torch.linspace(-1.0, 1.0, out.shape[-1])
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * weights).sum(), [x, *(p for _, p in named)], allow_unused=True)
    x_grad, by_name = grads[0], dict(zip((n for n, _ in named), grads[1:], strict=True))
    assert x_grad is not None
    missing = [n for n, g in by_name.items() if g is None]
    assert not missing, f"parameters no gradient reaches: {missing[:5]}"
    return x_grad, {n: g for n, g in by_name.items() if g is not None}


# -- forward and backward ---------------------------------------------------------------------------


@per_name
def test_forward_and_backward_at_the_cfgs_input_size(name: str) -> None:
    model = built(name)
    cfg = model.pretrained_cfg
    small = sum(p.numel() for p in model.parameters()) > FULL_SIZE_PARAMS and takes_any_size(name, cfg)
    _, height, width = (3, SMALL, SMALL) if small else cfg.input_size
    x = image(height, width)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, model.num_classes or model.head_hidden_size)  # headless: pre-logits
    assert torch.isfinite(logits).all()
    x_grad, grads = gradients(model, x)
    assert x_grad.shape == x.shape
    assert torch.isfinite(x_grad).all()
    assert all(torch.isfinite(g).all() for g in grads.values())


# -- the default cfgs describe the model ----------------------------------------------------------


@per_name
def test_default_cfgs_describe_the_model(name: str) -> None:
    by_classes: dict[int, ZooModule] = {}  # a tag's model (its cfg's class count: 0 for a backbone's weights)
    for cfg in cfgs(name):
        if cfg.num_classes not in by_classes:
            by_classes[cfg.num_classes] = meta_model(f"{name}.{cfg.tag}" if cfg.tag else name)
        model = by_classes[cfg.num_classes]
        modules = dict(model.named_modules())
        channels = cfg.input_size[0]
        assert len(cfg.mean) == len(cfg.std) == channels, cfg.tag
        first = modules.get(cfg.first_conv)
        assert isinstance(first, nn.Conv2d), f"{cfg.tag}: first_conv {cfg.first_conv!r} is not a conv of the model"
        assert first.in_channels == channels, cfg.tag
        head = modules.get(cfg.classifier)
        assert head is model.get_classifier(), f"{cfg.tag}: classifier {cfg.classifier!r} is not the model's head"
        assert model.num_classes == cfg.num_classes, cfg.tag
        if cfg.num_classes == 0:
            assert isinstance(head, nn.Identity), cfg.tag
        else:
            outputs = head.out_features if isinstance(head, nn.Linear) else getattr(head, "out_channels", None)
            assert outputs == cfg.num_classes, cfg.tag


@per_name
def test_pool_size_is_the_final_map_at_input_size(name: str) -> None:
    model = meta_model(name)
    for size in sorted({c.input_size for c in cfgs(name)}):
        cfg = next(c for c in cfgs(name) if c.input_size == size)
        if cfg.fixed_input_size:  # built for one size, the one its cfg names
            assert model.image_size_built_for() == size[1:], cfg.tag
        elif not takes_any_size(name, cfg):
            continue
        feats = model.forward_features(torch.empty(1, *size, device="meta"))
        reduction = model.feature_info[-1].reduction
        grid = tuple(math.ceil(s / reduction) for s in size[1:])
        if (
            feats.ndim == 3
        ):  # a token model: its patch tokens (whole patches: 384 px at patch 14 is 27) after its prefix
            patches = tuple(s // reduction for s in size[1:])
            assert feats.shape[1] == getattr(model, "num_prefix_tokens", 0) + patches[0] * patches[1], cfg.tag
            assert cfg.pool_size is None, cfg.tag  # tokens are no map to pool (as the reference's cfgs say)
        elif f"{name}.{cfg.tag}" in POOL_SIZE_SLIPS:
            assert feats.shape[-2:] == POOL_SIZE_SLIPS[f"{name}.{cfg.tag}"] == grid != cfg.pool_size, cfg.tag
        else:
            assert feats.shape[-2:] == cfg.pool_size == grid, cfg.tag


# -- features_only ------------------------------------------------------------------------------


@per_name
def test_features_only_gives_what_feature_info_says(name: str) -> None:
    with torch.device("meta"):
        extractor = zoo.create_model(name, features_only=True)
    assert isinstance(extractor, FeatureExtractor)
    _, height, width = extractor.pretrained_cfg.input_size
    out = extractor(torch.empty(2, 3, height, width, device="meta"))
    maps = list(out.values()) if isinstance(out, dict) else out
    info = extractor.feature_info
    assert len(maps) == len(info)
    # a patch embedding covers whole patches (rounding down); strided convolutions pad (rounding up)
    side: Callable[[float], int] = math.floor if hasattr(meta_model(name), "patch_embed") else math.ceil
    for i, fmap in enumerate(maps):
        assert fmap.shape[:2] == (2, info.channels(i)), info.module_name(i)
        assert fmap.shape[-2:] == (side(height / info.reduction(i)), side(width / info.reduction(i)))
        assert info[i]["num_chs"] == info.channels(i)


# -- forward_intermediates ----------------------------------------------------------------------


@per_name
def test_last_intermediate_is_forward_features(name: str) -> None:
    model = built(name)
    x = image()
    with torch.no_grad():
        features = model.forward_features(x)
        final, taps = model.forward_intermediates(x)
        normed = model.forward_intermediates(x, 1, norm=True, intermediates_only=True)
    torch.testing.assert_close(final, features, rtol=0, atol=0)
    assert len(taps) == len(model.feature_info)
    assert taps[-1].shape[1] == model.feature_info[-1]["num_chs"]
    # with norm, the last tap is the final features (what follows the last tap applied), as a map
    torch.testing.assert_close(normed[-1], as_map(model, features, SMALL, SMALL), rtol=0, atol=0)


# -- TorchScript and torch.fx -------------------------------------------------------------------


@scripting
@graph_module_annotations
@per_name
def test_fx_trace_forward_backward_then_torchscript(name: str) -> None:
    model = built(name)
    traced = torch.fx.symbolic_trace(model)
    x = image()
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(traced(x), expected, rtol=0, atol=0)
    x_grad, grads = gradients(traced, x)
    eager_x_grad, eager_grads = gradients(model, x)
    torch.testing.assert_close(x_grad, eager_x_grad)
    assert grads.keys() == eager_grads.keys()  # a traced module keeps its parameters' names
    for key, g in eager_grads.items():
        torch.testing.assert_close(grads[key], g, msg=key)
    scripted = torch.jit.script(traced)  # the traced code's annotations are types TorchScript resolves
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected)


# -- prune_intermediate_layers ------------------------------------------------------------------


@per_name
def test_prune_intermediate_layers(name: str) -> None:
    model = built(name)
    x = image()
    with torch.no_grad():
        logits = model(x)
        _, taps = model.forward_intermediates(x)
    n = len(taps)
    keep = max(n - 2, 0)
    pruned = shallow(model)
    assert pruned.prune_intermediate_layers([keep - n], prune_norm=True) == [keep]  # negatives count from the end
    assert pruned.num_classes == 0  # prune_head (the default) drops the classifier
    assert len(pruned.feature_info) == keep + 1
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        kept = pruned.forward_intermediates(x, list(range(keep + 1)), intermediates_only=True)
    for a, b in zip(kept, taps, strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the last tap kept with the head: nothing is dropped, so forward is as it was
    whole = shallow(model)
    assert whole.prune_intermediate_layers(1, prune_head=False) == [n - 1]
    with torch.no_grad():
        torch.testing.assert_close(whole(x), logits, rtol=0, atol=0)
