"""Checks of the model surface shared by the per-family unit tests (one model at a time), and their inputs."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
import torch
import torch.fx
from torch import nn

import zoo
from refdata import reference
from weights_support import CheckpointServer, cache_files, safetensors_bytes
from zoo.api import default_zoo
from zoo.archs.base import ZooModule
from zoo.domain.values import FeatureCfg
from zoo.services.features import FeatureFactory

FACTORY = FeatureFactory()
SurfaceModel = ZooModule  # every family's model class
M = TypeVar("M", bound=ZooModule)


def images(batch: int = 1, height: int = 64, width: int = 64, *, seed: int = 0) -> torch.Tensor:
    """A batch of random RGB images, the same for the same arguments (a family test's input X)."""
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def small_model(cls: Callable[..., M], defaults: Mapping[str, object], kwargs: Mapping[str, object]) -> M:
    """A family's small test model: cls(**defaults, **kwargs) (kwargs win), built after torch.manual_seed(0).

    cls takes any keywords here: a test passes wrong values on purpose, for the model's checks to refuse.
    """
    torch.manual_seed(0)
    return cls(**{**defaults, **kwargs})


def meta_model(name: str, cls: type[M], output_stride: int | None = None) -> M:
    """The model of name (at output_stride, if given) on the meta device: structure only, no weights initialised."""
    with torch.device("meta"):
        model = zoo.create_model(name) if output_stride is None else zoo.create_model(name, output_stride=output_stride)
    assert isinstance(model, cls), f"{name} is a {type(model).__name__}, not a {cls.__name__}"
    return model


def check_reference_taps(
    model: SurfaceModel, name: str, *, output_stride: int = 32, head_hidden_size: int | None = None
) -> None:
    """feature_info and num_features are the reference's for name (model built with output_stride), and
    head_hidden_size is num_features (or head_hidden_size, for a head that widens the pooled features).

    Past output_stride a network dilates instead of striding: the taps stay, their strides stop growing.
    """
    facts = reference(name)
    expected = [{**tap, "reduction": min(tap["reduction"], output_stride)} for tap in facts["feature_info"]]
    assert tap_dicts(model) == expected
    assert model.num_features == facts["num_features"]
    assert model.head_hidden_size == (facts["num_features"] if head_hidden_size is None else head_hidden_size)


def tap_dicts(model: SurfaceModel) -> list[dict[str, object]]:
    """feature_info in the reference files' form."""
    return [
        {"index": t.index, "module": t.module, "num_chs": t.num_chs, "reduction": t.reduction}
        for t in model.feature_info
    ]


def taps_by_hooks(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every tap's output as forward hooks on the feature_info modules see it (independent of the model's code)."""
    with torch.no_grad():
        out = FACTORY.wrap(model, FeatureCfg(), feature_cls="hook")(x)
    assert isinstance(out, list)
    return out


def _intermediates(
    model: SurfaceModel, x: torch.Tensor, indices: int | Sequence[int] | None = None, *, stop_early: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out = model.forward_intermediates(x, indices, stop_early=stop_early)
    assert isinstance(out, tuple)
    final, taps = out
    assert isinstance(final, torch.Tensor)
    assert isinstance(taps, list)
    return final, taps


def _taps_only(
    model: SurfaceModel, x: torch.Tensor, indices: int | Sequence[int] | None = None, output_fmt: str = "NCHW"
) -> list[torch.Tensor]:
    out = model.forward_intermediates(x, indices, output_fmt=output_fmt, intermediates_only=True)
    assert isinstance(out, list)
    return out


def check_intermediates(model: SurfaceModel, x: torch.Tensor, later: str) -> None:
    """forward_intermediates: final == forward_features, taps == the hooked modules' outputs, index forms, stopping.

    later names a module after the first tap that a taps-only request for tap 0 must not run.
    """
    model.eval()
    with torch.no_grad():
        final, taps = _intermediates(model, x)
        assert torch.equal(final, model.forward_features(x))
        hooked = taps_by_hooks(model, x)
        assert len(taps) == len(model.feature_info) == len(hooked)
        for t, h, info in zip(taps, hooked, model.feature_info, strict=True):
            assert torch.equal(t, h), info
            assert t.shape[1] == info.num_chs
            assert t.shape[-1] == -(-x.shape[-1] // info.reduction), info
        last_two = _taps_only(model, x, indices=2)
        assert all(torch.equal(a, b) for a, b in zip(last_two, taps[-2:], strict=True))
        picked = _taps_only(model, x, indices=[-1, 0])
        assert torch.equal(picked[0], taps[0])
        assert torch.equal(picked[1], taps[-1])
        nhwc = _taps_only(model, x, indices=[1], output_fmt="NHWC")
        assert torch.equal(nhwc[0], taps[1].permute(0, 2, 3, 1))

        calls: list[str] = []
        handle = model.get_submodule(later).register_forward_hook(lambda *_: calls.append(later))
        try:
            _taps_only(model, x, indices=[0])
            assert calls == [], "a taps-only request ran past its last tap"
            final, (tap,) = _intermediates(model, x, indices=[0], stop_early=True)
            assert calls == [], "stop_early ran past its last tap"
            torch.testing.assert_close(final, tap)  # stopped early, the final features are that tap's
        finally:
            handle.remove()
    refused: list[tuple[str, Callable[[], object]]] = [
        ("indices", lambda: model.forward_intermediates(x, 0)),
        ("indices", lambda: model.forward_intermediates(x, [len(taps)])),
        ("indices", lambda: model.forward_intermediates(x, [])),
        ("output_fmt", lambda: model.forward_intermediates(x, output_fmt="NCWH")),
        ("norm", lambda: model.forward_intermediates(x, norm=1)),  # type: ignore[call-overload]  # a caller's mistake
    ]
    for named, call in refused:
        with pytest.raises(zoo.ZooError, match=named):
            call()


def check_prune(model: SurfaceModel, x: torch.Tensor) -> None:
    """prune_intermediate_layers keeps what taps 0..1 need: fewer parameters, forward_features ends at tap 1."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        _, taps = _intermediates(model, x)
        n_params = sum(p.numel() for p in model.parameters())
        with pytest.raises(zoo.ZooError, match="indices"):
            model.prune_intermediate_layers([0, 99])
        assert sum(p.numel() for p in model.parameters()) == n_params, "a refused prune changed the model"
        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        assert sum(p.numel() for p in model.parameters()) < n_params / 4
        assert torch.equal(model.forward_features(x), taps[1])
        assert torch.equal(model(x), taps[1])  # the head is gone: forward returns the unpooled map
        assert model.num_features == model.feature_info[-1].num_chs == taps[1].shape[1]
        again = _taps_only(model, x)
        assert all(torch.equal(a, b) for a, b in zip(again, taps[:2], strict=True))


def check_script_and_fx(model: SurfaceModel, x: torch.Tensor) -> None:
    """torch.jit.script and torch.fx.symbolic_trace compute what eager does."""
    model.eval()
    scripted = torch.jit.script(model)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(scripted(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)


def _train_step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1.0, 1.0, out.shape[-1])).sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert x.grad is not None
    return out.detach(), grads, x.grad


def check_grad_checkpointing(
    model: SurfaceModel, x: torch.Tensor, switch: Callable[[SurfaceModel], None] | None = None
) -> None:
    """Two copies, one with its checkpointing switched (by switch; set_grad_checkpointing(True) without one):
    one training step gives the same outputs, gradients and BN statistics."""
    plain, ckpt = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    if switch is None:
        ckpt.set_grad_checkpointing(True)
    else:
        switch(ckpt)
    out_p, grads_p, xg_p = _train_step(plain, x)
    out_c, grads_c, xg_c = _train_step(ckpt, x)
    torch.testing.assert_close(out_c, out_p, rtol=0, atol=0)
    torch.testing.assert_close(xg_c, xg_p, rtol=1e-6, atol=1e-7)
    assert grads_c.keys() == grads_p.keys()
    for k, g in grads_p.items():
        torch.testing.assert_close(grads_c[k], g, rtol=1e-6, atol=1e-7, msg=k)
    # the recomputation in backward must not update batch-norm statistics a second time
    buffers_c = dict(ckpt.named_buffers())
    for k, b in plain.named_buffers():
        assert torch.equal(buffers_c[k], b), k
    # forward_intermediates checkpoints its steps too, with the same results
    final_c, taps_c = ckpt.forward_intermediates(x)
    final_p, taps_p = plain.forward_intermediates(x)
    assert torch.equal(final_c, final_p)
    assert all(torch.equal(a, b) for a, b in zip(taps_c, taps_p, strict=True))


def check_pretrained(name: str, server: CheckpointServer, cache_dir: Path) -> None:
    """A checkpoint in the published layout loads with pretrained=True, also adapted to 1 channel and 7 classes."""
    torch.manual_seed(0)
    source = zoo.create_model(name).eval()
    with torch.no_grad():  # non-trivial statistics, so a buffer that failed to load would show
        for key, buf in source.named_buffers():
            if key.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif key.endswith("running_mean"):
                buf.normal_(0, 0.1)
    url = server.add(f"/timm/{name}.safetensors", safetensors_bytes(source.state_dict()))
    overlay = {"url": url, "hf_hub_id": ""}
    x = torch.randn(1, 3, 64, 64)
    model = default_zoo().create_model(name, pretrained=True, pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        # the same weights; summation order may differ in the last bit between two builds' kernels
        torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-6)
    grey = default_zoo().create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1, num_classes=7)
    grey.eval()
    assert grey.num_classes == 7
    with torch.no_grad():
        g = x[:, :1]
        torch.testing.assert_close(
            grey.forward_features(g), source.forward_features(g.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4
        )
        assert grey(g).shape == (1, 7)
    assert len(cache_files(cache_dir)) == 1


def check_drop_rate_only_in_training(model: SurfaceModel, x: torch.Tensor) -> None:
    """A model built with drop_rate=0.5: the head is deterministic in eval and drops features in training."""
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.equal(model.forward_head(feats), model.forward_head(feats))
        model.train()
        pooled = model.forward_head(feats, pre_logits=True)
    assert (pooled == 0).any()


def check_classifier_reset_and_pooling(model: SurfaceModel, x: torch.Tensor) -> None:
    """A model built with global_pool='catavgmax' whose map is 8x8 for x: head width, unpooled maps, resets."""
    model.eval()
    assert model.head_hidden_size == 2 * model.num_features
    model.reset_classifier(0, "")
    with torch.no_grad():
        assert model(x).shape == (1, model.num_features, 8, 8)
    with pytest.raises(zoo.ZooError, match="global_pool"):
        model.reset_classifier(4)
    model.reset_classifier(4, "max")
    assert model(x).shape == (1, 4)
    assert model.get_classifier() is model.get_submodule("head.fc")
