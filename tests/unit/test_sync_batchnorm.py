"""zoo.convert_sync_batchnorm in one process: what it replaces, what it keeps (the 2-process training is in
test_distributed.py)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import zoo
from modelcache import built
from zoo.archs.layers import BatchNormAct2d, InPlaceAbn2d, SyncBatchNormAct, SyncInPlaceAbn
from zoo.domain.errors import InvalidArgumentError
from zoo.domain.values import FeatureCfg
from zoo.services.features import FeatureFactory

NORMS = (nn.modules.batchnorm._BatchNorm, InPlaceAbn2d)


def _norms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, NORMS)]


@pytest.mark.drawn_names  # the run's drawn names (tests/tiers.py)
def test_every_model_converts_with_the_same_eval_outputs_and_state_dict(name: str) -> None:
    original = built(name)
    model = copy.deepcopy(original)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = {n: type(m) for n, m in _norms(model)}
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a norm left unconverted warns
        assert zoo.convert_sync_batchnorm(model) is model
    converted = dict(_norms(model))
    assert converted.keys() == kinds.keys()
    for n, m in converted.items():
        assert isinstance(m, SyncInPlaceAbn if kinds[n] is InPlaceAbn2d else SyncBatchNormAct), n
        assert not m.training
    state = model.state_dict()
    assert list(state) == list(before)  # same keys, same order: checkpoints load either way
    for k, v in state.items():
        assert torch.equal(v, before[k]), k
    original.load_state_dict(state)  # strict, into the unconverted model
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def _stack() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        BatchNormAct2d(4),  # ReLU
        InPlaceAbn2d(4),  # leaky ReLU
        BatchNormAct2d(4, apply_act=False),
        nn.BatchNorm2d(4, momentum=None),
    )


def test_activations_are_kept_and_tensors_shared() -> None:
    stack = _stack()
    old = list(stack)
    params = [id(p) for p in stack.parameters()]
    zoo.convert_sync_batchnorm(stack)
    acts = [type(m.act) for m in stack[1:] if isinstance(m, SyncBatchNormAct)]
    assert acts == [nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Identity]
    assert old[1].act is stack[1].act  # the same activation module moves over
    assert [id(p) for p in stack.parameters()] == params  # an optimizer built earlier still holds them
    assert isinstance(stack[4], SyncBatchNormAct)
    assert stack[4].momentum is None


def test_without_a_process_group_training_is_plain_batch_norm() -> None:
    torch.manual_seed(0)
    reference = _stack().train()
    synced = zoo.convert_sync_batchnorm(copy.deepcopy(reference))
    x = torch.randn(4, 3, 9, 9)
    for _ in range(2):
        torch.testing.assert_close(synced(x), reference(x), rtol=0, atol=0)
    for (k, a), b in zip(synced.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_hooks_move_to_the_replacement() -> None:
    stack = _stack().eval()
    seen: list[torch.Tensor] = []
    handle = stack[2].register_forward_hook(lambda m, i, o: seen.append(o))
    zoo.convert_sync_batchnorm(stack)
    x = torch.randn(1, 3, 6, 6)
    stack(x)
    assert len(seen) == 1
    assert seen[0].shape == (1, 4, 4, 4)
    handle.remove()  # the handle from before the conversion still unhooks
    stack(x)
    assert len(seen) == 1


def test_hook_extractor_with_taps_on_norms_keeps_its_outputs() -> None:
    # a copy of the shared model, wrapped as create_model(features_only=True, feature_cls="hook") does
    feats = (
        FeatureFactory()
        .wrap(copy.deepcopy(built("densenet121")), FeatureCfg(), out_indices=(0, 4), feature_cls="hook")
        .eval()
    )
    tapped = {i.module for i in feats.feature_info}
    assert tapped == {"features.norm0", "features.norm5"}  # BatchNormAct2d modules the hooks sit on
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = feats(x)
        zoo.convert_sync_batchnorm(feats)
        got = feats(x)
    assert isinstance(got, list)
    assert isinstance(expected, list)
    assert len(got) == len(expected) == 2
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_converting_twice_changes_nothing() -> None:
    stack = zoo.convert_sync_batchnorm(_stack())
    modules = list(stack.modules())
    zoo.convert_sync_batchnorm(stack)
    assert list(stack.modules()) == modules


def test_a_shared_norm_gets_one_replacement() -> None:
    norm = BatchNormAct2d(4)
    pair = nn.Sequential(norm, norm)
    zoo.convert_sync_batchnorm(pair)
    assert pair[0] is pair[1]
    assert isinstance(pair[0], SyncBatchNormAct)


def test_an_unknown_batch_norm_subclass_is_left_with_a_warning() -> None:
    class Scaled(nn.BatchNorm2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = 2 * super().forward(x)
            return out

    model = nn.Sequential(Scaled(4), nn.BatchNorm2d(4))
    with pytest.warns(UserWarning, match="left a .*Scaled as it is"):
        zoo.convert_sync_batchnorm(model)
    assert type(model[0]) is Scaled
    assert isinstance(model[1], SyncBatchNormAct)


@pytest.mark.parametrize(
    ("model", "process_group", "match"),
    [
        ("resnet18", None, "model='resnet18' is invalid: expected a torch.nn.Module"),
        (nn.BatchNorm2d(4), None, "bare BatchNorm2d"),
        (nn.Sequential(nn.BatchNorm2d(4)), "world", "process_group='world' is invalid"),
    ],
)
def test_bad_arguments_are_refused(model: object, process_group: object, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        zoo.convert_sync_batchnorm(model, process_group)  # type: ignore[type-var,arg-type]  # wrong on purpose
    if isinstance(model, nn.Module):
        assert not any(isinstance(m, SyncBatchNormAct) for m in model.modules())  # left as it was
