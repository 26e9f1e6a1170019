"""ResNet's surface in detail (pruning, checkpointing, head width) and the extractors under TorchScript and torch.fx."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
from torch import nn

import zoo
from zoo.archs.resnet import ResNet
from zoo.domain import (
    FEATURE_CLASSES,
    FeatureCfg,
    FeatureNotAvailableError,
    InvalidFeatureRequestError,
    InvalidValueError,
)
from zoo.services.features import FeatureFactory

FACTORY = FeatureFactory()
CFG = FeatureCfg()
NO_SCRIPT_WARNING = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def resnet(model: object) -> ResNet:
    assert isinstance(model, ResNet)
    return model


def as_list(out: list[torch.Tensor] | dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return list(out.values()) if isinstance(out, dict) else out


# -- head_hidden_size -------------------------------------------------------------------------


@pytest.mark.parametrize(("pool", "mult"), [("avg", 1), ("max", 1), ("avgmax", 1), ("catavgmax", 2), ("", 1)])
def test_head_hidden_size_follows_the_pooling(r18: ResNet, pool: str, mult: int) -> None:
    model = copy.copy(r18)
    object.__setattr__(model, "_modules", dict(r18._modules))
    model.reset_classifier(0 if pool == "" else 3, pool)
    assert model.head_hidden_size == 512 * mult
    assert r18.head_hidden_size == 512
    if pool:
        fc = model.get_classifier()
        assert isinstance(fc, nn.Linear)
        assert fc.in_features == model.head_hidden_size
    built = resnet(zoo.create_model("resnet18", global_pool=pool or "avg", num_classes=3))
    assert built.head_hidden_size == 512 * (2 if pool == "catavgmax" else 1)


# -- prune_intermediate_layers ----------------------------------------------------------------


def test_prune_replaces_later_stages_and_the_head(r18: ResNet, x: torch.Tensor) -> None:
    model = copy.deepcopy(r18)
    with torch.no_grad():
        _, taps = r18.forward_intermediates(x)
    assert model.prune_intermediate_layers([-4]) == [1]  # normalised, as forward_intermediates reads indices
    assert isinstance(model.layer1, nn.Sequential)
    assert all(isinstance(getattr(model, f"layer{i}"), nn.Identity) for i in (2, 3, 4))
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert [t.module for t in model.feature_info] == ["act1", "layer1"]
    assert model.num_features == model.head_hidden_size == 64
    assert model.num_classes == 0
    assert isinstance(model.get_classifier(), nn.Identity)
    assert not any(k.startswith(("layer2.", "layer3.", "layer4.", "fc.")) for k in model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), taps[1])  # no pooling left: forward ends at the last kept tap
        assert torch.equal(model.forward_features(x), taps[1])
        final, kept = model.forward_intermediates(x)
    assert torch.equal(final, taps[1])
    assert [torch.equal(a, b) for a, b in zip(kept, taps, strict=False)] == [True, True]
    with pytest.raises(InvalidFeatureRequestError, match=r"0=act1, 1=layer1$"):
        model.forward_intermediates(x, indices=(2,))


def test_prune_to_the_stem_drops_the_maxpool(r18: ResNet, x: torch.Tensor) -> None:
    model = copy.deepcopy(r18)
    assert model.prune_intermediate_layers([0]) == [0]
    assert isinstance(model.maxpool, nn.Identity)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), r18.forward_intermediates(x, [0], intermediates_only=True)[0])


def test_prune_by_count_and_twice(r18: ResNet) -> None:
    model = copy.deepcopy(r18)
    assert model.prune_intermediate_layers(3) == [2, 3, 4]  # the last three taps: nothing to drop
    assert isinstance(model.layer4, nn.Sequential)
    assert model.prune_intermediate_layers([-2]) == [3]
    assert model.prune_intermediate_layers(2) == [2, 3]  # counted among the taps left
    assert [t.module for t in model.feature_info] == ["act1", "layer1", "layer2", "layer3"]


def test_prune_head_false_keeps_a_classifier_only_where_it_fits(r18: ResNet, x: torch.Tensor) -> None:
    model = copy.deepcopy(r18)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InvalidValueError, match=r"prune_head=False keeps a classifier for 512 features.*leaves 256"):
        model.prune_intermediate_layers([3], prune_head=False)
    assert model.state_dict().keys() == before.keys()  # refused before anything changed
    assert len(model.feature_info) == 5
    assert model.num_features == 512
    assert model.prune_intermediate_layers(prune_head=False) == [4]
    assert isinstance(model.fc, nn.Linear)
    with torch.no_grad():
        assert torch.equal(model(x), r18(x))
    headless = copy.deepcopy(r18)
    headless.reset_classifier(0, "max")
    assert headless.prune_intermediate_layers([2], prune_head=False) == [2]
    assert headless.head_hidden_size == 128
    with torch.no_grad():
        assert headless(x).shape == (2, 128)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"indices": 6}, InvalidFeatureRequestError, "indices=6 is invalid.*from 1 to 5"),
        ({"indices": [5]}, InvalidFeatureRequestError, r"indices=\[5\] is invalid: 5 is out of range"),
        ({"indices": []}, InvalidFeatureRequestError, "selects no tap"),
        ({"prune_norm": "no"}, InvalidValueError, "prune_norm='no' is invalid: expected True or False"),
        ({"prune_head": 0}, InvalidValueError, "prune_head=0 is invalid: expected True or False"),
    ],
)
def test_prune_refuses_bad_arguments(
    r18: ResNet, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    model = copy.deepcopy(r18)
    with pytest.raises(error, match=match):
        model.prune_intermediate_layers(**kwargs)  # type: ignore[arg-type]  # deliberately wrong
    assert len(model.feature_info) == 5
    assert isinstance(model.layer4, nn.Sequential)


# -- set_grad_checkpointing -------------------------------------------------------------------


def test_set_grad_checkpointing_validates_and_toggles(r18: ResNet) -> None:
    model = copy.copy(r18)
    with pytest.raises(InvalidValueError, match="enable='yes' is invalid: expected True or False"):
        model.set_grad_checkpointing("yes")  # type: ignore[arg-type]  # deliberately wrong
    assert model.grad_checkpointing is False
    model.set_grad_checkpointing()
    assert model.grad_checkpointing is True
    model.set_grad_checkpointing(False)
    assert model.grad_checkpointing is False


def test_checkpointing_replays_stochastic_depth_and_dropout(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    plain = resnet(zoo.create_model("resnet18", drop_path_rate=0.3, drop_rate=0.2)).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    results = []
    for model in (plain, ckpt):
        torch.manual_seed(7)  # the same masks drawn in both runs: the recomputation must draw them again
        out = model(x)
        torch.autograd.backward(out.sum())
        results.append((out.detach(), [p.grad for p in model.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_a, grads_b, strict=True):
        assert a is not None
        assert b is not None
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@NO_SCRIPT_WARNING
def test_checkpointing_models_script_and_trace(r18: ResNet, x: torch.Tensor) -> None:
    model = copy.copy(r18)
    model.set_grad_checkpointing()
    with torch.no_grad():
        expected = r18(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), expected, rtol=0, atol=0)


def test_checkpointing_applies_to_forward_intermediates(r18: ResNet, x: torch.Tensor) -> None:
    model = copy.copy(r18)
    model.set_grad_checkpointing()
    inp = x.clone().requires_grad_()
    ran: list[str] = []
    handle = model.layer2[0].register_forward_pre_hook(lambda *_: ran.append("layer2.0"))
    try:
        taps = model.forward_intermediates(inp, [2], intermediates_only=True)
        torch.autograd.backward(taps[0].sum())
    finally:
        handle.remove()
    assert ran == ["layer2.0", "layer2.0"]  # once forward, once recomputed in backward
    assert inp.grad is not None


# -- extractors under TorchScript and torch.fx ------------------------------------------------


@NO_SCRIPT_WARNING
@pytest.mark.parametrize("feature_cls", ["list", "dict"])
@pytest.mark.parametrize("out_indices", [(0,), (1, 3), (0, 1, 2, 3, 4)])
def test_list_and_dict_extractors_script(
    r18: ResNet, x: torch.Tensor, feature_cls: str, out_indices: tuple[int, ...]
) -> None:
    extractor = FACTORY.wrap(r18, CFG, out_indices=out_indices, feature_cls=feature_cls)
    scripted = torch.jit.script(extractor)
    with torch.no_grad():
        expected = extractor(x)
        got = scripted(x)
    assert type(got) is type(expected)
    if isinstance(expected, dict):
        assert isinstance(got, dict)
        assert list(got) == list(expected)
    assert all(torch.equal(a, b) for a, b in zip(as_list(got), as_list(expected), strict=True))


@NO_SCRIPT_WARNING
def test_hook_and_getter_extractors_say_what_they_cannot_do(r18: ResNet) -> None:
    hook = FACTORY.wrap(r18, CFG, feature_cls="hook")
    getter = FACTORY.wrap(r18, CFG, feature_cls="getter")
    with pytest.raises(FeatureNotAvailableError, match=r"feature_cls='hook'.*cannot be traced.*'list' or 'dict'"):
        torch.fx.symbolic_trace(hook)
    with pytest.raises(FeatureNotAvailableError, match=r"feature_cls='hook'.*cannot be scripted"):
        torch.jit.script(hook)
    with pytest.raises(FeatureNotAvailableError, match=r"feature_cls='getter'.*cannot be scripted.*'list' or 'dict'"):
        torch.jit.script(getter)


# -- extractors hold only what they run -------------------------------------------------------


@pytest.mark.parametrize("feature_cls", FEATURE_CLASSES)
@pytest.mark.parametrize("out_indices", [(0,), (1, 2), (4,)])
def test_every_parameter_of_an_extractor_gets_a_gradient(
    r18: ResNet, x: torch.Tensor, feature_cls: str, out_indices: tuple[int, ...]
) -> None:
    extractor = FACTORY.wrap(copy.deepcopy(r18), CFG, out_indices=out_indices, feature_cls=feature_cls)
    reference = FACTORY.wrap(r18, CFG, out_indices=out_indices, feature_cls="list")
    torch.autograd.backward(torch.stack([t.sum() for t in as_list(extractor(x))]).sum())
    names = [n for n, p in extractor.named_parameters() if p.grad is None]
    assert names == []
    # the same parameter set as the list extractor, whose modules are cut after the last tap
    assert sum(p.numel() for p in extractor.parameters()) == sum(p.numel() for p in reference.parameters())
