"""zoo.optim: parameter groups for torch.optim, with weight-decay exclusion and layer-wise lr decay."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import zoo
from model_checks import meta_model
from zoo.archs.base import ZooModule
from zoo.archs.vit import VisionTransformer
from zoo.domain import InvalidValueError, ModelSurfaceError, ZooError
from zoo.optim import layer_groups, param_groups


def small_resnet() -> ZooModule:
    torch.manual_seed(0)
    model = zoo.create_model("resnet18", num_classes=3)
    assert isinstance(model, ZooModule)
    return model


def names_of(model: nn.Module, group: dict[str, object]) -> list[str]:
    ids = {id(p): n for n, p in model.named_parameters()}
    params = group["params"]
    assert isinstance(params, list)
    return [ids[id(p)] for p in params]


def weight_decay_of(group: dict[str, object]) -> float:
    value = group["weight_decay"]
    assert isinstance(value, float)
    return value


def lr_scale_of(group: dict[str, object]) -> float:
    value = group["lr_scale"]
    assert isinstance(value, float)
    return value


def lr_of(group: dict[str, object]) -> float:
    value = group["lr"]
    assert isinstance(value, float)
    return value


def backward(loss: torch.Tensor) -> None:
    # torch.autograd.backward is typed; Tensor.backward is not (mypy: untyped call)
    torch.autograd.backward(loss)


@pytest.fixture(scope="module")
def vit() -> VisionTransformer:
    return meta_model("vit_tiny_patch16_224", VisionTransformer)


@pytest.mark.parametrize("layer_decay", [None, 0.75])
def test_the_groups_hold_every_trainable_parameter_once(vit: VisionTransformer, layer_decay: float | None) -> None:
    groups = param_groups(vit, weight_decay=0.05, layer_decay=layer_decay)
    listed = [n for g in groups for n in names_of(vit, g)]
    assert sorted(listed) == sorted(n for n, _ in vit.named_parameters())
    assert len(listed) == len(set(listed))
    assert all(names_of(vit, g) for g in groups), "an empty group"


def test_one_dimensional_parameters_biases_and_named_ones_go_without_decay(vit: VisionTransformer) -> None:
    groups = param_groups(vit, weight_decay=0.05, no_weight_decay_list=["blocks.0.attn.*"])
    decayed = {n for g in groups if weight_decay_of(g) == 0.05 for n in names_of(vit, g)}
    exempt = {n for g in groups if weight_decay_of(g) == 0.0 for n in names_of(vit, g)}
    params = dict(vit.named_parameters())
    # the model's own no_weight_decay() names: 3-D tensors, exempt by name alone
    assert {"cls_token", "pos_embed"} <= exempt
    assert params["pos_embed"].ndim == 3
    assert {n for n in params if n.startswith("blocks.0.attn.")} <= exempt  # the caller's pattern
    assert all(params[n].ndim <= 1 for n in exempt if not n.startswith(("blocks.0.attn.", "cls_", "pos_")))
    assert all(params[n].ndim > 1 and not n.endswith(".bias") for n in decayed)
    assert "blocks.1.attn.qkv.weight" in decayed
    assert {"norm.weight", "blocks.3.ls1.gamma", "head.bias"} & set(params) <= exempt
    assert len(groups) == 2


def test_layer_scales_decay_from_the_head_to_the_stem(vit: VisionTransformer) -> None:
    layers = layer_groups(vit)  # embeddings, 12 blocks (the last with the final norm), head
    assert len(layers) == 14
    groups = param_groups(vit, weight_decay=0.05, layer_decay=0.5, lr=1e-3)
    layer_of = {n: i for i, names in enumerate(layers) for n in names}
    last = len(layers) - 1
    for group in groups:
        ids = {layer_of[n] for n in names_of(vit, group)}
        assert len(ids) == 1, "a group spans layers"
        (layer,) = ids
        assert lr_scale_of(group) == 0.5 ** (last - layer)
        assert lr_of(group) == pytest.approx(1e-3 * 0.5 ** (last - layer))
    scales = [lr_scale_of(g) for g in groups]
    assert scales == sorted(scales), "scales fall from the head back to the stem"
    assert scales[0] == 0.5**last
    assert scales[-1] == 1.0
    # each layer gets a group for its decayed and one for its exempt parameters (where it has both)
    assert len(groups) == 2 * len(layers)


def test_layer_decay_1_and_none_keep_one_rate(vit: VisionTransformer) -> None:
    for layer_decay in (1.0, None):
        groups = param_groups(vit, weight_decay=0.05, layer_decay=layer_decay, lr=0.1)
        assert {lr_scale_of(g) for g in groups} == {1.0}
        assert {g["lr"] for g in groups} == {0.1}


def test_frozen_parameters_are_left_out() -> None:
    model = small_resnet()
    for p in model.get_submodule("layer1").parameters():
        p.requires_grad_(False)
    listed = {n for g in param_groups(model, weight_decay=0.1, layer_decay=0.9) for n in names_of(model, g)}
    assert listed == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("layer1.") for n in listed)


def test_one_adamw_step_decays_only_what_it_should() -> None:
    model = small_resnet().train()
    decay, lr = 0.1, 0.5
    groups = param_groups(model, weight_decay=decay, layer_decay=0.5, lr=lr)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # zero gradients: Adam's own update is 0, so all that moves a parameter is its group's decoupled decay
    backward(model(torch.randn(2, 3, 32, 32)).sum() * 0)
    optimizer.step()
    checked = 0
    for group in groups:
        factor = 1 - lr_of(group) * weight_decay_of(group)
        for name in names_of(model, group):
            after = dict(model.named_parameters())[name].detach()
            if weight_decay_of(group) == 0.0:
                assert torch.equal(after, before[name]), f"{name} moved without a gradient or decay"
            else:
                assert factor < 1
                torch.testing.assert_close(after, before[name] * factor)
            checked += 1
    assert checked == len(before)
    # a real step moves every parameter that gets a gradient (the residual branches behind a zero-initialised
    # last norm get none yet) and, with decay, the others of the decayed groups
    optimizer.zero_grad()
    backward(model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean())
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer.step()
    params = dict(model.named_parameters())
    with_grad = {n for n, p in params.items() if p.grad is not None and bool(p.grad.ne(0).any())}
    assert len(with_grad) >= len(params) // 3
    moved = {n for n, p in params.items() if not torch.equal(p.detach(), snapshot[n])}
    decayed = {n for g in groups if weight_decay_of(g) > 0 for n in names_of(model, g)}
    assert moved == with_grad | decayed


# -- what a caller can get wrong ---------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, math.nan, math.inf, True, "0.5"])
def test_a_layer_decay_outside_0_1_is_refused(vit: VisionTransformer, bad: object) -> None:
    with pytest.raises(InvalidValueError, match=r"layer_decay=.* is invalid: expected a finite number in \(0, 1\]"):
        param_groups(vit, weight_decay=0.05, layer_decay=bad)  # type: ignore[arg-type]  # wrong on purpose


@pytest.mark.parametrize("bad", [-1e-4, math.nan, "0.05", None])
def test_a_negative_or_non_number_weight_decay_is_refused(vit: VisionTransformer, bad: object) -> None:
    with pytest.raises(InvalidValueError, match=r"weight_decay=.* is invalid: expected a finite number >= 0"):
        param_groups(vit, weight_decay=bad)  # type: ignore[arg-type]  # wrong on purpose


def test_bad_lr_and_no_weight_decay_lists_are_refused(vit: VisionTransformer) -> None:
    with pytest.raises(InvalidValueError, match=r"lr=-1.0 is invalid: expected a finite number >= 0"):
        param_groups(vit, weight_decay=0.05, lr=-1.0)
    with pytest.raises(InvalidValueError, match=r"no_weight_decay_list='pos_embed' .* e\.g\. \['pos_embed'\]"):
        param_groups(vit, weight_decay=0.05, no_weight_decay_list="pos_embed")
    with pytest.raises(InvalidValueError, match=r"3 is not a name"):
        param_groups(vit, weight_decay=0.05, no_weight_decay_list=["a", 3])  # type: ignore[list-item]  # on purpose


class NoGroups(ZooModule):
    """A ZooModule subclass that declares no parameter groups of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)


@pytest.mark.parametrize("model", [nn.Sequential(nn.Linear(2, 2)), NoGroups()], ids=["plain", "zoo-subclass"])
def test_layer_decay_needs_group_matcher_but_weight_decay_alone_does_not(model: nn.Module) -> None:
    with pytest.raises(ModelSurfaceError, match=r"has no parameter groups: it lacks a working group_matcher") as e:
        param_groups(model, weight_decay=0.05, layer_decay=0.75)
    assert isinstance(e.value, ZooError)
    assert e.value.missing == ("group_matcher",)
    groups = param_groups(model, weight_decay=0.05)
    assert [sorted(names_of(model, g)) for g in groups] == [[n] for n, _ in model.named_parameters()]
    with pytest.raises(InvalidValueError, match="coarse=1 is invalid"):
        layer_groups(small_resnet(), coarse=1)  # type: ignore[arg-type]  # wrong on purpose


def test_zoo_optim_is_reachable_from_the_package_without_importing_torch_first() -> None:
    import subprocess
    import sys

    code = (
        "import sys, zoo\n"
        "print('torch' in sys.modules, 'zoo.optim' in sys.modules)\n"
        "print(zoo.optim.param_groups is sys.modules['zoo.optim'].param_groups, 'optim' in dir(zoo))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["False False", "True True"]
