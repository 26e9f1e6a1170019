"""The surface of each drawn model (tests/tiers.py): intermediates, head width, pruning, scripting, tracing,
checkpointing."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.fx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import zoo
from modelcache import built, served, shallow, taps_without_getter
from zoo.archs.layers import POOL_TYPES
from zoo.domain import FeatureNotAvailableError, InvalidFeatureRequestError, InvalidValueError
from zoo.services.features import FeatureFactory, FeatureTaps

SIZE = 64
BATCH = 1  # batch coupling (BatchNorm) is covered by tests/property/test_models.py; here compute is the budget
FACTORY = FeatureFactory()


# conftest.py: small forwards on one torch thread; the run's drawn names (tests/tiers.py)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.drawn_names]


@functools.cache
def image() -> torch.Tensor:
    return torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@functools.cache
def reference(name: str) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """forward_features and every tap's output (by the list extractor, or a token model's hooked blocks laid out
    on the patch grid: code shared with neither the getter nor forward_intermediates)."""
    model = built(name)
    cfg = zoo.api.default_zoo().get_spec(name).feature_cfg
    with torch.no_grad():
        taps = taps_without_getter(model, cfg, image())
        return model.forward_features(image()), tuple(taps)


@functools.cache
def normed_reference(name: str) -> tuple[torch.Tensor, ...]:
    """What forward_intermediates(norm=True) gives per tap: a convolutional model applies what follows its last
    tap (a final norm or activation) to that tap, whose output is then the final map; a token model (features
    [B, tokens, C]) applies its final norm to every tap, as timm does."""
    features, taps = reference(name)
    if features.ndim == 4:
        return (*taps[:-1], features)
    model = built(name)
    cfg = zoo.api.default_zoo().get_spec(name).feature_cfg
    with torch.no_grad():
        return tuple(taps_without_getter(model, cfg, image(), norm=True))


def fingerprint(model: nn.Module) -> dict[str, int]:
    """Which tensor each state_dict key holds (by storage address): a change to the model's structure shows here."""
    return {k: v.data_ptr() for k, v in model.state_dict().items()}


# -- forward_intermediates --------------------------------------------------------------------


def test_final_output_and_every_intermediate(name: str) -> None:
    model = built(name)
    features, taps = reference(name)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(image())
    torch.testing.assert_close(final, features, rtol=0, atol=0)
    assert len(intermediates) == len(model.feature_info) == len(taps)
    for got, expected, info in zip(intermediates, taps, model.feature_info, strict=True):
        assert got.shape[1] == info.num_chs
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # a convolutional model's last tap is its final feature map once what follows it (a final norm or
    # activation, as in the pre-activation Xceptions) is applied, which norm=True does; a token model's
    # final norm applies to every tap
    with torch.no_grad():
        _, normed = model.forward_intermediates(image(), norm=True)
    for got, expected in zip(normed, normed_reference(name), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@settings(max_examples=6)
@given(data=st.data())
def test_drawn_requests(name: str, data: st.DataObject) -> None:
    model = built(name)
    features, taps = reference(name)
    n = len(taps)
    indices: int | list[int] = data.draw(
        st.integers(1, n) | st.lists(st.integers(-n, n - 1), min_size=1, max_size=n, unique_by=lambda i: i % n),
        label="indices",
    )
    stop_early = data.draw(st.booleans(), label="stop_early")
    output_fmt = data.draw(st.sampled_from(["NCHW", "NHWC"]), label="output_fmt")
    norm = data.draw(st.booleans(), label="norm")
    only = data.draw(st.booleans(), label="intermediates_only")
    selected = list(range(n - indices, n)) if isinstance(indices, int) else sorted(i % n for i in indices)
    with torch.no_grad():
        out = model.forward_intermediates(
            image(), indices, norm=norm, stop_early=stop_early, output_fmt=output_fmt, intermediates_only=only
        )
    if only:
        assert isinstance(out, list)
        got = out
    else:
        assert isinstance(out, tuple)
        final, got = out
        if stop_early and not norm and final.ndim == 4:
            torch.testing.assert_close(final, taps[selected[-1]], rtol=0, atol=0)
        elif not stop_early and not norm:
            torch.testing.assert_close(final, features, rtol=0, atol=0)
    assert len(got) == len(selected)
    for a, i in zip(got, selected, strict=True):
        # norm applies what follows the last tap in forward_features (a final norm or activation) to that tap
        # (a token model's final norm: to every tap)
        tap = normed_reference(name)[i] if norm else taps[i]
        expected = tap.permute(0, 2, 3, 1) if output_fmt == "NHWC" else tap
        torch.testing.assert_close(a, expected, rtol=0, atol=0)


def test_bad_requests_are_refused(name: str) -> None:
    model = built(name)
    n = len(model.feature_info)
    for bad in (n + 1, -1, [-n - 1], [0, n], []):
        with pytest.raises(InvalidFeatureRequestError, match=f"0={model.feature_info[0].module}"):
            model.forward_intermediates(image(), bad)
    with pytest.raises(InvalidFeatureRequestError, match=f"from 1 to {n}"):
        model.forward_intermediates(image(), 0)
    with pytest.raises(InvalidValueError, match="'NCHW', 'NHWC'"):
        model.forward_intermediates(image(), output_fmt="nchw")


# -- head_hidden_size -------------------------------------------------------------------------


def test_head_hidden_size_is_the_pre_logits_width(name: str) -> None:
    model = built(name)
    features, _ = reference(name)
    with torch.no_grad():
        assert model.forward_head(features, pre_logits=True).shape == (BATCH, model.head_hidden_size)
    classifier = model.get_classifier()
    if isinstance(classifier, nn.Linear):
        assert classifier.in_features == model.head_hidden_size
    clone = shallow(model)
    head_conv = model.head_hidden_size != model.num_features  # a conv after pooling sets the width (MobileNetV3)
    if "catavgmax" not in getattr(model, "global_pools", POOL_TYPES):
        # a token model (ViT) pools as timm's does: no pooling that changes the width
        with pytest.raises(InvalidValueError, match="catavgmax"):
            clone.reset_classifier(7, "catavgmax")
        assert clone.get_classifier() is classifier  # refused: nothing changed
        clone.reset_classifier(7, "avgmax")
        assert clone.head_hidden_size == model.head_hidden_size
    elif head_conv:  # such a head conv cannot read the doubled width: it is re-initialised, with a warning
        with pytest.warns(UserWarning, match="conv_head"):
            clone.reset_classifier(7, "catavgmax")
        assert clone.head_hidden_size == model.head_hidden_size
    else:
        clone.reset_classifier(7, "catavgmax")  # doubles the pooled width
        assert clone.head_hidden_size == 2 * model.head_hidden_size
    with torch.no_grad():
        assert clone.forward_head(features, pre_logits=True).shape == (BATCH, clone.head_hidden_size)
        assert clone.forward_head(features).shape == (BATCH, 7)
    clone.reset_classifier(0, "")
    assert clone.head_hidden_size == model.num_features
    assert model.get_classifier() is classifier  # the reset was the copy's own


# -- prune_intermediate_layers ----------------------------------------------------------------


def test_prune_intermediate_layers(name: str) -> None:
    model = built(name)
    _, taps = reference(name)
    n = len(taps)
    before = fingerprint(model)
    head = model.default_cfg.classifier
    for last in range(n):
        clone = shallow(model)
        assert clone.prune_intermediate_layers([last - n]) == [last]
        kept = fingerprint(clone)
        assert set(kept.items()) <= set(before.items())
        assert not any(k.startswith(f"{head}.") for k in kept)
        assert clone.get_classifier() is not model.get_classifier()
        if last < n - 1:
            assert len(kept) < len(before) - 2  # stages dropped, not only the classifier
        with torch.no_grad():
            kept_taps = clone.forward_intermediates(image(), list(range(last + 1)), intermediates_only=True)
        assert len(kept_taps) == last + 1
        for a, b in zip(kept_taps, taps, strict=False):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert fingerprint(model) == before  # pruning a copy leaves the model whole
    assert shallow(model).prune_intermediate_layers() == [n - 1]  # the default keeps the last tap


# -- scripting and tracing --------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_scripted_model_and_extractors_agree_with_eager(name: str) -> None:
    model = built(name)
    _, taps = reference(name)
    x = image()
    scripted = torch.jit.script(model)
    with torch.no_grad():  # one call each: the first runs the graph as scripted (later ones may be optimised)
        torch.testing.assert_close(scripted(x), model(x))
    cfg = zoo.api.default_zoo().get_spec(name).feature_cfg
    for kind in ("list", "dict"):
        if kind not in served(model):
            # a token model's blocks give tokens, not maps: refused, pointing at the getter
            with pytest.raises(InvalidFeatureRequestError, match="getter"):
                FACTORY.wrap(model, cfg, feature_cls=kind)
            continue
        extractor = FACTORY.wrap(model, cfg, feature_cls=kind)
        if in_block_taps(extractor, model):
            # taps inside a block are read by forward hooks, which a script cannot hold: refused, clearly
            with pytest.raises(FeatureNotAvailableError, match="inside a block"):
                torch.jit.script(extractor)
            continue
        out = torch.jit.script(extractor)(x)
        got = list(out.values()) if isinstance(out, dict) else out
        for a, b in zip(got, taps, strict=True):
            torch.testing.assert_close(a, b)


def in_block_taps(extractor: nn.Module, model: nn.Module) -> bool:
    """Whether a list/dict extractor has taps that are not among the modules it runs in order."""
    # its steps: the top-level modules, and the children of the containers it opens (without flatten_sequential:
    # a container of the model's name that is not the model's module)
    steps = {key for key, _ in extractor.named_children()}
    classifier = dict(model.named_children())
    opened = [(k, m) for k, m in extractor.named_children() if k in classifier and m is not classifier[k]]
    steps |= {f"{k}.{c}" for k, m in opened for c, _ in m.named_children()}
    info = extractor.feature_info
    assert isinstance(info, FeatureTaps)
    return any(m.replace(".", "_") not in steps and m not in steps for m in info.module_name())


def test_traced_model_and_extractors_agree_with_eager(name: str) -> None:
    model = built(name)
    _, taps = reference(name)
    cfg = zoo.api.default_zoo().get_spec(name).feature_cfg
    x = image()
    with torch.no_grad():
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x), rtol=0, atol=0)
        for kind in ("list", "dict", "getter"):
            if kind not in served(model):
                continue  # refused at wrap: test_scripted_model_and_extractors_agree_with_eager checks how
            extractor = FACTORY.wrap(model, cfg, feature_cls=kind)
            if kind != "getter" and in_block_taps(extractor, model):
                with pytest.raises(FeatureNotAvailableError, match="inside a block"):
                    torch.fx.symbolic_trace(extractor)
                continue
            out = torch.fx.symbolic_trace(extractor)(x)
            got = list(out.values()) if isinstance(out, dict) else out
            assert len(got) == len(taps), kind
            for a, b in zip(got, taps, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    if "hook" in served(model):
        with pytest.raises(FeatureNotAvailableError, match="cannot be traced"):
            torch.fx.symbolic_trace(FACTORY.wrap(model, cfg, feature_cls="hook"))
    else:
        with pytest.raises(InvalidFeatureRequestError, match="getter"):
            FACTORY.wrap(model, cfg, feature_cls="hook")


# -- set_grad_checkpointing -------------------------------------------------------------------


def training_step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """Output, parameter gradients and the bytes of activations autograd kept for backward, for one step.

    The weights a layer keeps for its backward are not counted: checkpointing cannot drop them, and in a
    small model with a wide head (MobileNetV3-Small, LCNet: a 1280 x 1000 classifier) they would hide the
    activations it does drop.
    """
    saved = 0
    weights = {p.data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        if t.data_ptr() not in weights:
            saved += t.numel() * t.element_size()
        return t

    for p in model.parameters():
        p.grad = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    out.square().mean().backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return out.detach(), grads, saved


def test_grad_checkpointing_agrees_with_eager(name: str) -> None:
    model = built(name)
    # two images: a norm over the pooled features (MobileNetV4's norm_head) needs more than one value per
    # channel in training
    x = torch.cat([image(), image().flip(-1)])
    start = {k: b.clone() for k, b in model.named_buffers()}
    try:
        model.train()
        out, grads, saved = training_step(model, x)
        after = {k: b.clone() for k, b in model.named_buffers()}
        for k, b in model.named_buffers():
            b.copy_(start[k])
        model.set_grad_checkpointing(True)
        out_ckpt, grads_ckpt, saved_ckpt = training_step(model, x)
        torch.testing.assert_close(out_ckpt, out, rtol=1e-5, atol=1e-6)
        for a, b in zip(grads_ckpt, grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        # the recomputation in backward does not count the batch twice in the running statistics
        for k, b in model.named_buffers():
            torch.testing.assert_close(b, after[k], rtol=0, atol=0, msg=k)
        # activations were dropped, not kept (dense blocks keep every layer's input, so they save less)
        assert saved_ckpt < 0.75 * saved, (saved_ckpt, saved)
    finally:
        model.set_grad_checkpointing(False)
        model.eval()
        for k, b in model.named_buffers():
            b.copy_(start[k])
        model.zero_grad(set_to_none=True)
