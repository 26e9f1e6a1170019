"""Properties every registered model holds, over batch sizes and input sizes it accepts (drawn names: tests/tiers.py).

Its layout and published cfgs are checked for every name on the meta device (tests/every_name); here the
real build is held to the same layout.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import zoo
from meta_models import on_meta
from modelcache import as_map, built, drawn_kwargs, small_input_kwargs
from refdata import reference
from tiers import build_kwargs, over_budget
from zoo.archs.layers import POOL_TYPES
from zoo.services.builder import constructor_params

# conftest.py: small forwards on one torch thread; each test runs on the run's drawn names (tests/tiers.py)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.drawn_names]


def test_state_dict_matches_reference(name: str) -> None:
    model = built(name)
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    # the real build is the meta build (which tests/every_name holds to the reference for every name) ...
    with on_meta():
        twin = zoo.create_model(name, **drawn_kwargs(name))
    assert got == {k: list(v.shape) for k, v in twin.state_dict().items()}
    if over_budget(name):
        return  # built smaller (tests/tiers.py): the reference's widths and depths are the meta build's alone
    # ... and, at full size, the reference's
    facts = reference(name)
    assert got == facts["state_dict"]
    assert model.num_features == facts["num_features"]
    assert model.num_classes == facts["num_classes"]


@given(batch=st.integers(1, 2), size=st.integers(32, 64))
def test_forward_shapes_and_values(name: str, batch: int, size: int) -> None:
    model = built(name)
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
    stride = model.feature_info[-1].reduction
    fmap = as_map(model, feats, size, size)  # a token model's tokens on its patch grid
    assert fmap.shape[:2] == (batch, model.num_features)
    assert all(abs(s - math.ceil(size / stride)) <= 1 for s in fmap.shape[-2:])
    assert logits.shape == (batch, model.num_classes or model.head_hidden_size)  # headless: pre-logits
    assert torch.isfinite(logits).all()
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (batch, model.head_hidden_size)


def test_reset_classifier(name: str) -> None:
    model = copy.deepcopy(built(name))
    pooling = getattr(model, "global_pool", None)  # a token model's pooling ('token', 'avg', 'map', ...)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.reset_classifier(0)
        pooled = model(x)
        # the pre-logits width: the pooled features, or a head conv's after them (MobileNetV3)
        assert pooled.shape == (2, model.head_hidden_size)
        model.reset_classifier(0, "")
        fmap = model(x)
        if fmap.ndim == 3:
            # a token model gives its token sequence; pooled by its class token (ViT's 'token'), that token ...
            if pooling == "token":
                torch.testing.assert_close(fmap[:, 0], pooled)
            fmap = as_map(model, fmap, 64, 64)
            # ... or by the mean of its patch tokens, normalised before pooling (a GAP model without fc_norm)
            if pooling == "avg" and isinstance(getattr(model, "fc_norm", None), nn.Identity):
                torch.testing.assert_close(fmap.mean((2, 3)), pooled)
        else:
            # a head that normalises after pooling (ConvNeXt's) normalises each position of the unpooled map instead
            head = getattr(model, "head", None)
            norm = getattr(head, "norm", None) if isinstance(head, nn.Module) else None
            if isinstance(norm, nn.Module):
                feats = model.forward_features(x)
                # ... and a hidden layer after the norm (ConvNeXt's MLP head) applies at every position too
                hidden = getattr(head, "pre_logits", nn.Identity())
                assert isinstance(hidden, nn.Module)
                torch.testing.assert_close(fmap, hidden(norm(feats).permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
                torch.testing.assert_close(pooled, hidden(norm(feats.mean((2, 3), keepdim=True)).flatten(1)))
            elif pooled.shape[1] == model.num_features:  # no head conv between pooling and the classifier
                torch.testing.assert_close(fmap.mean((2, 3)), pooled)
        assert fmap.ndim == 4
        assert fmap.shape[:2] == (2, model.num_features)
        assert torch.isfinite(fmap).all()


@functools.cache
def model_pools(name: str) -> tuple[str, ...]:
    """The poolings name's model takes: its global_pools (read off a meta build) where it has them, else POOL_TYPES."""
    with on_meta():
        pools: tuple[str, ...] = getattr(zoo.create_model(name), "global_pools", POOL_TYPES)
    return pools


@st.composite
def build_options(draw: st.DrawFn, name: str) -> tuple[int, int, dict[str, Any]]:
    """num_classes, in_chans, and the model keywords global_pool and output_stride where the model takes them.

    The pooling is one of the model's global_pools where it has them (a token model, a hidden layer after
    pooling), else POOL_TYPES.
    """
    spec = zoo.api.default_zoo().get_spec(name)
    takes = constructor_params(spec) or ()
    pools = model_pools(name)
    pool = draw(st.sampled_from(pools)) if "global_pool" in takes else "avg"
    num_classes = 0 if pool == "" else draw(st.integers(0, 12))
    in_chans = draw(st.integers(1, 5))
    # model keywords, typed as create_model forwards them; a model above the budget is built smaller (tests/tiers.py)
    extra: dict[str, Any] = {**small_input_kwargs(name), **build_kwargs(name)}
    if "global_pool" in takes:
        extra["global_pool"] = pool
    if "output_stride" in takes:
        extra["output_stride"] = draw(st.sampled_from((8, 16, 32)))
    return num_classes, in_chans, extra


@settings(max_examples=2)
@given(data=st.data())
def test_built_with_drawn_options(name: str, data: st.DataObject) -> None:
    num_classes, in_chans, extra = data.draw(build_options(name), label="options")
    model = zoo.create_model(name, num_classes=num_classes, in_chans=in_chans, **extra).eval()
    assert model.default_cfg.input_size[0] == in_chans
    assert model.default_cfg.num_classes == num_classes
    x = torch.randn(1, in_chans, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model.forward_head(feats)
    stride = extra.get("output_stride", model.feature_info[-1].reduction)
    assert isinstance(stride, int)
    fmap = as_map(model, feats, 64, 64)
    assert fmap.shape[1] == model.num_features
    assert all(abs(s - math.ceil(64 / stride)) <= 1 for s in fmap.shape[-2:])
    if extra.get("global_pool") == "":
        out = as_map(model, out, 64, 64)
        assert out.ndim == 4
        assert out.shape[:2] == (1, model.num_features)
    elif num_classes == 0:
        assert out.ndim == 2
        assert out.shape[0] == 1
    else:
        assert out.shape == (1, num_classes)
    assert torch.isfinite(out).all()
