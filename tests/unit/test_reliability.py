"""Issue 7's registry, facade and argument defects, each pinned by a test that failed before the fix."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import pytest
import torch
from torch import nn

import zoo
from zoo.api import ModelZoo
from zoo.archs.base import ZooModule
from zoo.domain import (
    DefaultCfg,
    InvalidValueError,
    ModelSpec,
    ModelSurfaceError,
    PruneSpec,
    UnknownModelError,
    ZooError,
    protocols,
)
from zoo.domain.protocols import surface_members
from zoo.services.registry import Registry


class Small(ZooModule):
    """A tiny classifier for registry tests."""

    def __init__(self, *, num_classes: int = 4, in_chans: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = 8
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(8, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc


# -- 6: a family loader that fails once stays loadable -------------------------------------------


def test_a_family_whose_first_load_is_interrupted_loads_on_the_next_call() -> None:
    calls = 0

    def loader() -> Iterator[ModelSpec]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt  # Ctrl-C while the family module imports torch
        yield ModelSpec(name="small", family="tests.small", constructor=Small)

    reg = Registry()
    reg.register_lazy("tests.small", ["small"], loader)
    with pytest.raises(KeyboardInterrupt):
        reg.get_spec("small")
    assert reg.is_model("small")
    assert reg.get_spec("small").constructor is Small
    assert calls == 2
    assert reg.list_models() == ["small"]


# -- 14: both decorator forms register and return the constructor itself -------------------------


def test_bare_and_called_register_model_register_and_return_the_function() -> None:
    reg = Registry()

    @reg.register_model
    def small_bare(*, num_classes: int = 4, in_chans: int = 3) -> ZooModule:
        return Small(num_classes=num_classes, in_chans=in_chans)

    @reg.register_model()
    def small_called(*, num_classes: int = 4, in_chans: int = 3) -> ZooModule:
        return Small(num_classes=num_classes, in_chans=in_chans)

    assert small_bare.__name__ == "small_bare"  # the function itself, not a wrapper
    assert reg.get_spec("small_bare").constructor is small_bare
    assert reg.get_spec("small_called").constructor is small_called
    model = ModelZoo(registry=reg).create_model("small_bare", num_classes=2)
    assert model(torch.zeros(1, 3, 4, 4)).shape == (1, 2)


def test_a_class_without_the_model_surface_registers_and_is_checked_where_its_surface_is_needed() -> None:
    # issue 20 changed this contract: registration took ZooModule subclasses only; any nn.Module is built now
    class Plain(nn.Module):
        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x

    reg = Registry()
    reg.register_model(Plain)
    reg.register(ModelSpec(name="plain_spec", family="t", constructor=Plain))
    assert reg.list_models() == ["plain", "plain_spec"]
    app = ModelZoo(registry=reg)
    assert isinstance(app.create_model("plain"), Plain)
    # what needs the classifier head names the members it lacks
    with pytest.raises(ModelSurfaceError, match=r"Plain.*lacks num_classes, num_features, forward_head, get_"):
        app.create_model("plain_spec", num_classes=3)


def test_model_surface_names_are_the_zoo_module_surface() -> None:
    members = surface_members(protocols.ModelSurface)
    methods = [name for name in members if callable(getattr(protocols.ModelSurface, name))]
    head = ["forward_head", "get_classifier", "reset_classifier"]
    assert methods == [*head, "forward_features", "forward_intermediates", "prune_intermediate_layers"]
    for name in methods:
        assert callable(getattr(ZooModule, name))
    # the attributes (num_classes, num_features, feature_info) are set by each architecture's constructor
    model = zoo.create_model("resnet18")
    assert isinstance(model, protocols.ModelSurface)
    assert all(hasattr(model, name) for name in members)


# -- 12: the Pruner given to ModelZoo reaches the Builder; dead protocols are gone ---------------


class RecordingPruner:
    """A Pruner that records what it was asked and halves nothing: it swaps the classifier."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def prune(self, model: nn.Module, spec: PruneSpec) -> nn.Module:
        self.seen.append(spec.to_text())
        assert isinstance(model, Small)
        model.fc = nn.Linear(8, model.num_classes)
        return model


def test_a_pruner_handed_to_model_zoo_prunes_specs_that_name_a_layout() -> None:
    reg = Registry()
    reg.register(
        ModelSpec(
            name="small_pruned",
            family="t",
            constructor=Small,
            default_cfgs=(DefaultCfg(num_classes=4),),
            prune_spec="fc.weight:[4, 8]",
        )
    )
    pruner = RecordingPruner()
    model = ModelZoo(registry=reg, pruner=pruner).create_model("small_pruned")
    assert pruner.seen == ["fc.weight:[4, 8]"]
    assert model(torch.zeros(1, 3, 4, 4)).shape == (1, 4)
    # ModelZoo's default is the standard Pruner; a Builder configured without one refuses to prune
    from zoo.domain import BuildRequest
    from zoo.services.builder import Builder

    with pytest.raises(zoo.domain.FeatureNotAvailableError, match="Pruner"):
        Builder().build(reg.get_spec("small_pruned"), BuildRequest(cfg=reg.get_spec("small_pruned").default_cfg))


def test_unused_protocols_are_removed() -> None:
    for dead in ("ZooModel", "SpecSource", "FeatureInfoView"):
        assert not hasattr(protocols, dead)


# -- 9: wrong types at the facade are ZooErrors naming the value ---------------------------------


def untyped(fn: Callable[..., object]) -> Callable[..., object]:
    """The function, without its signature: these tests pass what the types forbid, as untyped callers do."""
    return fn


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: untyped(zoo.create_model)(None), "None"),
        (lambda: untyped(zoo.create_model)(18), "18"),
        (lambda: untyped(zoo.create_model)(b"x"), "b'x'"),
        (lambda: untyped(zoo.is_model)(18), "18"),
        (lambda: untyped(zoo.get_default_cfg)(None), "None"),
        (lambda: untyped(zoo.list_models)(None), "None"),
        (lambda: untyped(zoo.list_models)(1), "1"),
        (lambda: untyped(zoo.list_models)(b"x"), "b'x'"),
        (lambda: untyped(zoo.list_models)(exclude_filters=None), "None"),
        (lambda: untyped(zoo.list_models)(["resnet*", None]), "None"),
        (lambda: untyped(zoo.create_model)("resnet18", pretrained_cfg_overlay="x"), "'x'"),
        (lambda: untyped(zoo.create_model)("resnet18", checkpoint_path=123), "123"),
        (lambda: untyped(zoo.create_model)("resnet18", pretrained="False"), "'False'"),
        (lambda: untyped(zoo.create_model)("resnet18", features_only="no"), "'no'"),
        (lambda: untyped(zoo.create_model)("resnet18", pretrained_cfg_overlay={"fixed_input_size": "yes"}), "'yes'"),
        (lambda: untyped(zoo.create_model)("resnet18", pretrained_cfg_overlay={"mean": [float("nan")] * 3}), "nan"),
        (lambda: untyped(zoo.create_model)("resnet18", pretrained_cfg_overlay={"std": [0.0] * 3}), "0.0"),
        (lambda: untyped(zoo.create_model)("resnet18", pretrained_cfg_overlay={"std": [float("inf")] * 3}), "inf"),
        (lambda: untyped(zoo.create_model)("resnet18", num_classes=2.5), "2.5"),
        (lambda: untyped(zoo.create_model)("resnet18", num_classes=True), "True"),
    ],
)
def test_wrong_types_at_the_facade_are_zoo_errors_naming_the_value(call: object, named: str) -> None:
    assert callable(call)
    with pytest.raises(ZooError) as err:
        call()
    assert named in str(err.value)


def test_reset_classifier_refuses_non_int_class_counts() -> None:
    model = zoo.create_model("resnet18", num_classes=3).eval()
    for bad in ("10", 2.5, True):
        with pytest.raises(InvalidValueError, match=repr(bad)):
            untyped(model.reset_classifier)(bad)
    assert model.num_classes == 3
    untyped(model.reset_classifier)(np.int64(5))  # numpy ints are ints here
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


def test_numpy_integers_are_accepted_wherever_ints_are() -> None:
    built = untyped(zoo.create_model)("resnet18", num_classes=np.int64(7), in_chans=np.int32(2))
    assert isinstance(built, ZooModule)
    model = built.eval()
    assert model.num_classes == 7
    assert type(model.default_cfg.num_classes) is int
    assert model(torch.zeros(1, 2, 32, 32)).shape == (1, 7)
    feats = zoo.create_model("resnet18", features_only=True, out_indices=(np.int64(1), np.int64(-1)))
    assert feats.feature_info.channels() == [64, 512]


# -- 10: None means "unset" for the optional strings of a cfg ------------------------------------


def test_none_switches_a_cfg_source_off() -> None:
    cfg = zoo.get_default_cfg("resnet18").evolve({"hf_hub_id": None, "url": None})
    assert (cfg.hf_hub_id, cfg.url) == ("", "")
    assert not cfg.has_weights
    model = zoo.create_model("resnet18", pretrained_cfg_overlay={"hf_hub_id": None, "url": None, "license": None})
    assert (model.default_cfg.hf_hub_id, model.default_cfg.license) == ("", "")


# -- 8: every architecture keyword is validated, and the message lists what the model takes ------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"layers": (0, 0, 0, 0)}, "layers"),
        ({"layers": (-1, 1, 1, 1)}, "layers"),
        ({"layers": "1111"}, "layers"),
        ({"base_width": 0}, "base_width"),
        ({"cardinality": 0}, "cardinality"),
        ({"stem_width": -1}, "stem_width"),
        ({"stem_width": 1.5}, "stem_width"),
        ({"block": "x"}, "block"),
        ({"drop_rate": "0.1"}, "drop_rate"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"output_stride": 4}, "output_stride"),
        ({"global_pool": "mean"}, "global_pool"),
        ({"attn_layer": "cbam"}, "attn_layer"),
        ({"avg_down": "yes"}, "avg_down"),
        ({"stem_type": "tiered"}, "stem_type"),
    ],
)
def test_resnet_keywords_are_validated_at_construction(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidValueError) as err:
        untyped(zoo.create_model)("resnet50", **kwargs)
    assert f"{named}=" in str(err.value)


def test_unknown_keyword_message_lists_every_keyword_the_architecture_takes() -> None:
    with pytest.raises(zoo.domain.InvalidArgumentError) as err:
        zoo.create_model("resnet50", bogus=1)
    for real in ("layers", "block", "base_width", "global_pool", "output_stride", "drop_path_rate"):
        assert real in str(err.value)


# -- issue 8's values: DefaultCfg reads like timm's dict cfgs ------------------------------------


def test_default_cfg_is_a_read_only_mapping() -> None:
    cfg = zoo.get_default_cfg("resnet50")
    assert isinstance(cfg, Mapping)
    assert cfg["mean"] == cfg.mean
    assert cfg.get("min_input_size") is None
    assert "crop_pct" in cfg
    assert "min_input_size" not in cfg
    as_dict = dict(cfg)
    assert set(as_dict) == set(cfg.keys()) == set(cfg.to_dict())
    assert as_dict["input_size"] == cfg.input_size
    with pytest.raises(KeyError):
        cfg["nope"]
    with pytest.raises(TypeError):
        cfg["mean"] = (0.5, 0.5, 0.5)  # type: ignore[index]  # read-only: the point of the test
    model = zoo.create_model("resnet18")
    assert model.pretrained_cfg is model.default_cfg


def test_get_pretrained_cfg_value() -> None:
    assert (
        zoo.get_pretrained_cfg_value("resnet50.a1_in1k", "crop_pct") == zoo.get_default_cfg("resnet50.a1_in1k").crop_pct
    )
    assert zoo.get_pretrained_cfg_value("resnet50", "min_input_size") is None
    with pytest.raises(UnknownModelError):
        zoo.get_pretrained_cfg_value("resnet5", "crop_pct")
    with pytest.raises(InvalidValueError):
        untyped(zoo.get_pretrained_cfg_value)("resnet50", 3)


def test_list_models_tags_follow_pretrained_and_module_takes_a_list() -> None:
    with_tags = zoo.list_models("resnet18*", pretrained=True)
    assert with_tags
    assert all("." in n for n in with_tags)
    assert zoo.list_models("resnet18*", pretrained=True, include_tags=False) == ["resnet18", "resnet18d"]
    assert zoo.list_models("resnet18*") == ["resnet18", "resnet18d"]
    assert zoo.list_models(module=["resnet"]) == zoo.list_models(module="resnet")
    assert zoo.list_models(module=["resnet", "nope"]) == zoo.list_models(module="resnet")
    assert zoo.list_models(module=[]) == []


def test_default_cfg_warnings_are_not_raised_for_valid_overlays() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = DefaultCfg().evolve({"url": None, "mean": np.array([0.5, 0.5, 0.5]).tolist()})
    assert cfg.mean == (0.5, 0.5, 0.5)


def test_a_model_too_large_to_allocate_is_a_zoo_error_naming_the_request() -> None:
    # 2**30 classes need a 2 TiB classifier: the allocator refuses at once, and so does zoo
    with pytest.raises(InvalidValueError, match=r"num_classes=1073741824.*more memory"):
        zoo.create_model("resnet18", num_classes=2**30)
    with pytest.raises(InvalidValueError, match=r"num_classes=2147483648 is invalid"):
        zoo.create_model("resnet18", num_classes=2**31)
