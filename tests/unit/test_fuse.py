"""zoo.fuse_for_inference: batch norm folded into convolutions, outputs unchanged, the original untouched."""

from __future__ import annotations

import copy
import warnings
from typing import TypeVar

import pytest
import torch
from torch import nn

import zoo
from modelcache import built
from zoo.archs.fuse import FoldedNorm
from zoo.archs.layers import InPlaceAbn2d
from zoo.archs.resnet import ResNet
from zoo.domain.errors import FeatureNotAvailableError, InvalidValueError


def assert_same(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal within 1e-5 of the output's scale (its largest magnitude, or 1 if below).

    Folding reorders float32 arithmetic: in a deep random-weight network the last bits differ, and an
    output near zero among outputs in the hundreds cannot keep 1e-5 of its own size.
    """
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(got, expected, rtol=0.0, atol=1e-5 * scale)


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, InPlaceAbn2d))]


M = TypeVar("M", bound=nn.Module)


def _trained_looking(model: M, seed: int = 0) -> M:
    """A copy whose norms hold statistics and affine values like a trained model's, not the init's 0/1."""
    model = copy.deepcopy(model).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in _norms(model):
            n = norm.get_buffer("running_mean").numel()
            norm.get_buffer("running_mean").copy_(torch.randn(n, generator=g) * 0.2)
            norm.get_buffer("running_var").copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            norm.get_parameter("weight").copy_(torch.rand(n, generator=g) + 0.5)
            norm.get_parameter("bias").copy_(torch.randn(n, generator=g) * 0.2)
    return model


def _fuse_quietly(model: M) -> M:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "fuse_for_inference: .* left unfolded", UserWarning)
        return zoo.fuse_for_inference(model)


def _check_fused(model: nn.Module, fused: nn.Module) -> None:
    assert not fused.training
    folded = [m for m in fused.modules() if isinstance(m, FoldedNorm)]
    # a model without batch norm (ViT, ConvNeXt: layer norms) has nothing to fold and is an eval copy as it is
    assert bool(folded) == bool(_norms(model)), "nothing was folded"
    assert len(_norms(fused)) == len(_norms(model)) - len(folded)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_same(fused(x), model(x))


@pytest.mark.drawn_names  # the run's drawn names (tests/tiers.py)
def test_fused_model_computes_what_the_model_computes(name: str) -> None:
    # the model as built: its norms hold the init's statistics (0 and 1, scales 1 or 0), which checks which
    # norms fold and where their activations go; the arithmetic is checked with trained-looking values below
    model = built(name)
    _check_fused(model, _fuse_quietly(model))


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "xception41", "cspresnext50_iabn"])
def test_fused_model_computes_what_a_trained_looking_model_computes(name: str) -> None:
    model = _trained_looking(built(name))
    _check_fused(model, _fuse_quietly(model))


def test_the_original_is_untouched_and_the_copy_keeps_the_surface(r18: ResNet) -> None:
    before = {k: v.clone() for k, v in r18.state_dict().items()}
    r18.train()
    fused = zoo.fuse_for_inference(r18)
    assert r18.training  # its mode too
    r18.eval()
    after = r18.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(r18.bn1, nn.BatchNorm2d)
    assert isinstance(fused, ResNet)
    assert isinstance(fused.bn1, FoldedNorm)
    assert "bn1.running_mean" not in fused.state_dict()
    assert "conv1.bias" in fused.state_dict()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = r18.forward_intermediates(x, intermediates_only=True)
        got = fused.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(got, ref, strict=True):
        assert_same(a, b)


def test_training_a_fused_model_warns(r18: ResNet) -> None:
    fused = zoo.fuse_for_inference(r18)
    with pytest.warns(UserWarning, match="batch norms are folded"):
        fused.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused.eval()  # going back to eval is quiet


def test_taps_at_convolutions_are_not_folded() -> None:
    # pre-activation Xception taps blocks.N.stack.conv2, whose output is its pointwise conv's; the next
    # separable conv opens with a batch norm that folding it into that conv would move inside the tap
    model = _trained_looking(built("xception41p"))
    fused = _fuse_quietly(model)
    tapped = [info.module for info in model.feature_info if info.module.endswith("conv2")]
    assert tapped
    for path in tapped:
        assert fused.get_submodule(f"{path}.conv_pw").bias is None  # left as it was
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model.forward_intermediates(x, intermediates_only=True)
        got = fused.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(got, ref, strict=True):
        assert_same(a, b)


def test_unfoldable_norms_are_named_in_a_warning_or_an_error() -> None:
    model = built("densenet121")
    with pytest.warns(UserWarning, match=r"left unfolded .*: features\.denseblock1\.denselayer1\.norm1"):
        zoo.fuse_for_inference(model)
    with pytest.raises(InvalidValueError, match=r"strict=True.*features\.denseblock1\.denselayer1\.norm1"):
        zoo.fuse_for_inference(model, strict=True)
    assert isinstance(model.get_submodule("features.denseblock1.denselayer1.norm2"), nn.BatchNorm2d)


def test_feature_extractors_fuse_where_torch_fx_can_trace_them() -> None:
    torch.manual_seed(0)
    extractor = zoo.create_model("resnet18", features_only=True, out_indices=(1, 3)).eval()
    fused = zoo.fuse_for_inference(_trained_looking(extractor))
    reference = _trained_looking(extractor)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got, expected = fused(x), reference(x)
    assert isinstance(got, list)
    assert isinstance(expected, list)
    assert len(got) == len(expected) == 2
    for a, b in zip(got, expected, strict=True):
        assert_same(a, b)
    hook = zoo.create_model("resnet18", features_only=True, feature_cls="hook")
    with pytest.raises(FeatureNotAvailableError, match=r"cannot be traced.*feature_cls='getter'"):
        zoo.fuse_for_inference(hook)


def test_channels_last_weights_stay_channels_last(r18: ResNet) -> None:
    model = _trained_looking(r18).to(memory_format=torch.channels_last)
    fused = zoo.fuse_for_inference(model)
    conv = fused.layer1[0].conv1
    assert isinstance(conv, nn.Conv2d)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert_same(fused(x), model(x))


def test_a_non_module_is_refused() -> None:
    with pytest.raises(InvalidValueError, match=r"model=.*expected a torch.nn.Module"):
        zoo.fuse_for_inference("resnet18")  # type: ignore[type-var]  # the wrong type on purpose
