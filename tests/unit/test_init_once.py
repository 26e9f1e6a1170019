"""One-pass creation: a family with its own init_all_weights is built on meta and initialised once.

What must hold: every parameter and persistent buffer is written (for the run's drawn models: tests/tiers.py), the
weights are distributed as the ordinary path's (constructor: torch's defaults, then the family's
init), seeding reproduces them, pruned / in_chans / num_classes builds work, and a family without
init_all_weights keeps the ordinary path.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import attrs
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import zoo
from zoo.api import ModelZoo, default_zoo
from zoo.archs.base import ZooModule
from zoo.archs.convnext import ConvNeXt
from zoo.archs.regnet import RegNet, RegNetCfg
from zoo.archs.resnet import ResNet
from zoo.archs.vit import VisionTransformer
from zoo.domain.values import BuildRequest
from zoo.services import builder as builder_module
from zoo.services.builder import Builder, initialises_itself
from zoo.services.registry import Registry
from zoo.services.weights import meta

# one per family that opts in (xception, efficientnet and mobilenetv3 with torch's defaults and Google's
# init), and the variants that bring their own kinds of layer: SE convs with biases, ECA's Conv1d, blur
# pooling's computed buffer, in-place ABN, a pruned layout, a class token and position embeddings, layer scale
REPRESENTATIVE = (
    "resnet18",
    "seresnet50",
    "ecaresnet50d_pruned",
    "densenetblur121d",
    "cspresnext50_iabn",
    "xception41",
    "vit_tiny_patch16_224",
    "convnext_tiny",
    "regnety_016",
    "efficientnet_b0",
    "mobilenetv3_large_100",
)


def _kwargs(name: str) -> dict[str, object]:
    spec = default_zoo().get_spec(name)
    return Builder().model_args(spec, BuildRequest(cfg=spec.default_cfg))


def _constructed(name: str, seed: int) -> nn.Module:
    """The ordinary path: the constructor run for real (torch's defaults, then the family's own init)."""
    torch.manual_seed(seed)
    return default_zoo().get_spec(name).constructor(**_kwargs(name))


def _own_tensors(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    for path, module in model.named_modules():
        transient: set[str] = getattr(module, "_non_persistent_buffers_set", set())
        for name, t in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
            if name not in transient:
                yield path, module, name, t


class _RecordWrites(TorchFunctionMode):
    """Runs an init over meta parameters, recording which tensors it writes instead of writing them."""

    def __init__(self) -> None:
        super().__init__()
        self.written: set[int] = set()

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: object,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
    ) -> object:
        target = args[0] if args else (kwargs or {}).get("tensor")
        if isinstance(target, torch.Tensor) and target.is_meta and meta._writes_values(func):
            self.written.add(id(target))
            return target
        return func(*args, **(kwargs or {}))


def _recorded_writes(init: Callable[[], object]) -> set[int]:
    """ids of the meta tensors init writes (see _RecordWrites); nothing is written."""
    mode = _RecordWrites()
    real = nn.init.trunc_normal_

    def trunc_normal_(
        tensor: torch.Tensor,
        mean: float = 0.0,
        std: float = 1.0,
        a: float = -2.0,
        b: float = 2.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        # torch's trunc_normal_ returns a meta tensor before any op the mode could see
        if tensor.is_meta:
            mode.written.add(id(tensor))
            return tensor
        return real(tensor, mean, std, a, b, generator)

    with pytest.MonkeyPatch.context() as mp, mode:
        mp.setattr(nn.init, "trunc_normal_", trunc_normal_)
        init()
    return mode.written


@pytest.mark.drawn_names  # the run's drawn names (tests/tiers.py); on meta, at full size
def test_init_weights_writes_every_parameter_and_buffer(name: str) -> None:
    spec = default_zoo().get_spec(name)
    if not initialises_itself(spec):
        pytest.skip(f"{name} takes the ordinary path (its class defines no init_all_weights)")
    with meta.parameters_on_meta():  # cheap for every model: parameters on meta, buffers real
        model = spec.constructor(**_kwargs(name))
    assert isinstance(model, ZooModule)
    for _, _, _, t in _own_tensors(model):
        if not t.is_meta:  # buffers: poisoned, so that only a reset clears them
            t.fill_(math.nan if t.is_floating_point() else -7)
    written = _recorded_writes(model.init_all_weights)
    missed = [f"{p}.{n}" for p, _, n, t in _own_tensors(model) if t.is_meta and id(t) not in written]
    poisoned = [f"{p}.{n}" for p, _, n, t in _own_tensors(model) if not t.is_meta and (t.isnan() | (t == -7)).any()]
    assert not missed, f"init_all_weights leaves {missed[:5]} unwritten"
    assert not poisoned, f"init_all_weights leaves {poisoned[:5]} as they were"


@functools.cache
def _nan_filled(name: str) -> nn.Module:
    """create_model(name) on the one-pass path, its parameters NaN until init_all_weights writes them."""
    real = meta.materialize_parameters
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(meta, "materialize_parameters", functools.partial(real, fill=math.nan))
        torch.manual_seed(2)
        return zoo.create_model(name)


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_create_model_leaves_no_parameter_unwritten(name: str) -> None:
    assert initialises_itself(default_zoo().get_spec(name))
    model = _nan_filled(name)
    unwritten = [n for n, t in model.state_dict().items() if t.is_floating_point() and t.isnan().any()]
    assert not unwritten


_SAMPLE = 100_000  # values compared per tensor: plenty to tell a normal from a uniform of the same spread


def _moments(t: torch.Tensor) -> tuple[float, float, float]:
    """Mean, standard deviation and kurtosis (3 for a normal, 1.8 for a uniform) of a tensor's values."""
    x = t.flatten()[:_SAMPLE].double()  # values are drawn independently: a prefix is a fair sample
    mean, std = float(x.mean()), float(x.std())
    kurtosis = float((((x - mean) / std) ** 4).mean()) if std > 0 else 0.0
    return mean, std, kurtosis


# the pruned name is left out: the ordinary path builds its pruned layers with torch's defaults, where the
# one-pass path gives them the family's init (test_pruned_layers_are_built_small_and_initialised_by_the_family)
def _assert_distributed_alike(ordinary: Mapping[str, torch.Tensor], once: Mapping[str, torch.Tensor]) -> None:
    assert ordinary.keys() == once.keys()
    for key, a in ordinary.items():
        b = once[key]
        assert a.shape == b.shape, key
        if not a.is_floating_point() or a.numel() < 2 or bool((a == a.flatten()[0]).all()):
            assert torch.equal(a, b), key  # constant inits (ones, zeros, running stats) are reproduced exactly
            continue
        (ma, sa, ka), (mb, sb, kb) = _moments(a), _moments(b)
        n = min(a.numel(), _SAMPLE)
        # two independent samples of n values each: the difference of their means has standard error
        # std * sqrt(2 / n), of their stds about std / sqrt(n), of their kurtoses sqrt(48 / n) (normal
        # values; less for uniform ones). Six standard errors: a false failure is ~1e-9 per comparison.
        assert abs(ma - mb) <= 6 * sa * math.sqrt(2 / n), f"{key}: mean {ma} vs {mb}"
        assert abs(sa - sb) <= 6 * sa / math.sqrt(n), f"{key}: std {sa} vs {sb}"
        assert abs(ka - kb) <= 6 * math.sqrt(48 / n), f"{key}: kurtosis {ka} vs {kb}"


@pytest.mark.parametrize("name", [n for n in REPRESENTATIVE if not n.endswith("_pruned")])
def test_init_distributions_match_the_ordinary_path(name: str) -> None:
    _assert_distributed_alike(_constructed(name, seed=1).state_dict(), _nan_filled(name).state_dict())


# options no registered name uses, each changing what the family's init writes
_OPTIONS: dict[str, tuple[type[ZooModule], dict[str, object]]] = {
    "vit-layer-scale-no-class-token": (
        VisionTransformer,
        {
            "img_size": 32,
            "patch_size": 8,
            "embed_dim": 64,
            "depth": 2,
            "num_heads": 2,
            "init_values": 0.1,
            "class_token": False,
            "global_pool": "avg",
        },
    ),
    "convnext-head-scale-hidden-layer": (
        ConvNeXt,
        {
            "depths": (1, 1, 1, 1),
            "dims": (16, 32, 32, 64),
            "head_init_scale": -0.25,
            "ls_init_value": 0.5,
            "head_hidden_size": 64,
        },
    ),
    "convnext-head-scale-zero-conv-mlp": (
        ConvNeXt,
        {"depths": (1, 1), "dims": (16, 32), "head_init_scale": 0.0, "conv_mlp": True, "ls_init_value": None},
    ),
    "convnext-v2-grn-simplenorm-overlap-stem": (
        ConvNeXt,
        {
            "depths": (1, 1),
            "dims": (16, 32),
            "use_grn": True,
            "ls_init_value": None,
            "norm_layer": "simplenorm",
            "stem_type": "overlap_act",
        },
    ),
    "convnext-v2-grn-conv-mlp-tiered-stem": (
        ConvNeXt,
        {"depths": (1, 1), "dims": (16, 32), "use_grn": True, "conv_mlp": True, "stem_type": "overlap_tiered"},
    ),
    "regnet-se-no-zero-init-last": (
        RegNet,
        {"cfg": RegNetCfg(depth=6, w0=8, wa=30, wm=2, group_size=8, se_ratio=0.25), "zero_init_last": False},
    ),
}


@pytest.mark.parametrize("case", sorted(_OPTIONS))
def test_family_options_are_initialised_as_the_ordinary_path_does(case: str) -> None:
    cls, kwargs = _OPTIONS[case]
    torch.manual_seed(1)
    ordinary = cls(**kwargs)
    with meta.parameters_on_meta():
        once = cls(**kwargs)
    meta.materialize_parameters(once, fill=math.nan)
    once.init_all_weights()
    _assert_distributed_alike(ordinary.state_dict(), once.state_dict())


def test_a_seed_reproduces_the_weights() -> None:
    def seeded(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return zoo.create_model("resnet18").state_dict()

    first, again, other = seeded(3), seeded(3), seeded(4)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])


@pytest.mark.parametrize(
    ("name", "in_chans", "num_classes", "first_conv", "head"),
    [("resnet18", 1, 7, "conv1", "fc"), ("cspresnet50", 5, 0, "stem.conv1.conv", "head.fc")],
)
def test_in_chans_and_num_classes_on_the_one_pass_path(
    name: str, in_chans: int, num_classes: int, first_conv: str, head: str
) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(name, in_chans=in_chans, num_classes=num_classes)
    weight = model.get_submodule(first_conv).get_parameter("weight")
    assert weight.shape[1] == in_chans
    expected_std = math.sqrt(2.0 / (weight.shape[0] * weight[0, 0].numel()))  # Kaiming normal, fan-out
    assert abs(float(weight.detach().std()) - expected_std) < 0.1 * expected_std
    head_module = model.get_submodule(head)
    if num_classes == 0:
        assert isinstance(head_module, nn.Identity)
    else:
        assert head_module.get_parameter("weight").shape[0] == num_classes
    assert torch.isfinite(model(torch.randn(2, in_chans, 64, 64))).all()


def test_pruned_layers_are_built_small_and_initialised_by_the_family() -> None:
    model = _nan_filled("ecaresnet50d_pruned")
    assert isinstance(model, ResNet)
    conv = model.layer1[0].conv1
    assert isinstance(conv, nn.Conv2d)
    assert conv.out_channels != 64  # the pruned width, not resnet50's
    fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
    # the family's Kaiming-normal (fan-out), not torch's default for a freshly built conv
    assert abs(float(conv.weight.detach().std()) - math.sqrt(2.0 / fan_out)) < 0.15 * math.sqrt(2.0 / fan_out)


class _InheritsInit(ResNet):
    """A subclass that defines no init_all_weights of its own: it must take the ordinary path."""


def test_a_class_without_its_own_init_weights_is_built_the_ordinary_way(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = attrs.evolve(default_zoo().get_spec("resnet18"), name="inherits18", constructor=_InheritsInit)
    registry = Registry()
    registry.register(spec)
    app = ModelZoo(registry=registry)
    assert not initialises_itself(spec)
    called: list[str] = []
    monkeypatch.setattr(ResNet, "init_all_weights", lambda self: called.append("init_all_weights"))
    monkeypatch.setattr(builder_module, "_init_once", lambda model, device, kept: called.append("_init_once"))
    torch.manual_seed(0)
    model = app.create_model("inherits18")
    assert called == []
    conv1 = model.get_submodule("conv1").get_parameter("weight")
    assert not conv1.is_meta
    assert torch.isfinite(conv1).all()
    assert float(conv1.detach().std()) > 0


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenetv3_large_100"])
def test_mobile_families_draw_as_tensorflow_does(name: str) -> None:
    model = _nan_filled(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() >= 4096]
    assert convs
    for conv in convs:  # depthwise, pointwise and SE convs alike: N(0, 2 / fan_out), fan_out per group
        fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
        expected = math.sqrt(2.0 / fan_out)
        assert abs(float(conv.weight.detach().std()) - expected) < 0.1 * expected, conv
        if conv.bias is not None:
            assert not conv.bias.detach().any()
    head = model.get_submodule("classifier")
    assert isinstance(head, nn.Linear)
    bound = 1.0 / math.sqrt(head.out_features)
    assert float(head.weight.detach().abs().max()) <= bound
    assert float(head.weight.detach().abs().max()) > 0.9 * bound  # uniform over the whole range
    assert not head.bias.detach().any()


class _CountEmpty(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: object,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
    ) -> object:
        self.calls += func is torch.empty
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("keep", [True, False])
def test_materialising_reuses_the_memory_construction_allocated(keep: bool) -> None:
    spec = default_zoo().get_spec("resnet18")
    with meta.parameters_on_meta(keep_storage=keep) as kept:
        model = spec.constructor(**_kwargs("resnet18"))
    params = sum(1 for _ in model.parameters())
    with _CountEmpty() as counter:
        meta.materialize_parameters(model, "cpu", kept=kept)
    assert not meta.meta_tensors(model)
    # kept: every parameter lands in the memory its layer allocated; else each is allocated again
    assert counter.calls == (0 if keep else params)


def test_kept_memory_of_another_shape_is_not_reused() -> None:
    spec = default_zoo().get_spec("resnet18")
    with meta.parameters_on_meta(keep_storage=True) as kept:
        model = spec.constructor(**_kwargs("resnet18"))
    weight = model.get_submodule("conv1").get_parameter("weight")
    narrower = nn.Parameter(torch.empty(32, 3, 7, 7, device="meta"))
    # a pruned layer's new parameter is another object: nothing is kept for it
    assert kept.take(narrower) is None
    taken = kept.take(weight)
    assert taken is not None
    assert taken.shape == weight.shape
    assert not taken.is_meta
    assert kept.take(weight) is None  # handed out once


@pytest.mark.parametrize(("name", "keeps"), [("resnet18", True), ("ecaresnet50d_pruned", False)])
def test_memory_is_kept_through_the_build_unless_the_model_is_pruned(
    name: str, keeps: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []
    real = meta.parameters_on_meta

    def spy(*, keep_storage: bool = False) -> contextlib.AbstractContextManager[meta.KeptStorage]:
        asked.append(keep_storage)
        return real(keep_storage=keep_storage)

    monkeypatch.setattr(meta, "parameters_on_meta", spy)
    zoo.create_model(name)
    # a pruned model's layers change shape: the full model's memory would only raise the peak
    assert asked[:1] == [keeps]
