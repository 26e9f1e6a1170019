"""The facade and ModelZoo: resolution, cfgs, keyword errors, custom registries."""

from __future__ import annotations

import fnmatch
import subprocess
import sys

import pytest
import torch
from torch import nn

import zoo
from zoo.api import ModelZoo, builtin_registry
from zoo.archs.base import ZooModule
from zoo.archs.catalogue import FAMILIES, load_family
from zoo.domain import (
    BuildRequest,
    DefaultCfg,
    FeatureInfo,
    FeatureNotAvailableError,
    InvalidArgumentError,
    InvalidFeatureRequestError,
    InvalidValueError,
    UnknownModelError,
    ZooError,
)
from zoo.services.builder import Builder
from zoo.services.registry import Registry
from zoo.services.weights import CachedWeightLoader


def test_catalogue_index_matches_real_registrations() -> None:
    for module, names in FAMILIES.items():
        specs = load_family(module)
        assert tuple(s.name for s in specs) == names
        assert {s.family for s in specs} == {module}


def test_import_zoo_imports_no_architecture() -> None:
    code = (
        "import sys, zoo; names = zoo.list_models(); "
        "archs = sorted(m for m in sys.modules if m.startswith('zoo.archs.') and m != 'zoo.archs.catalogue'); "
        "services = sorted(m for m in sys.modules if m.startswith(('zoo.services.weights', 'zoo.services.features'))); "
        "print(len(names), archs, services)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == sum(len(n) for n in FAMILIES.values())
    assert out[1] == "[]"
    assert out[2] == "[]"


def test_create_by_name_and_tag() -> None:
    model = zoo.create_model("resnet18.tv_in1k")
    cfg = model.default_cfg
    assert isinstance(cfg, DefaultCfg)
    assert cfg.tag == "tv_in1k"
    assert cfg.interpolation == "bilinear"
    assert model.pretrained_cfg is cfg
    assert zoo.create_model("resnet18").default_cfg == zoo.get_default_cfg("resnet18")


def test_resolved_cfg_describes_the_built_model() -> None:
    model = zoo.create_model("resnet18", num_classes=7, in_chans=1, pretrained_cfg_overlay={"crop_pct": 1.0})
    cfg = model.default_cfg
    assert cfg.num_classes == 7
    assert cfg.input_size[0] == 1
    assert len(cfg.mean) == 1
    assert cfg.crop_pct == 1.0
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 7)


def test_unknown_keyword_names_it() -> None:
    with pytest.raises(InvalidArgumentError) as err:
        zoo.create_model("resnet18", drop_rat=0.1)
    assert "drop_rat" in str(err.value)
    assert "drop_rate" in str(err.value)
    app = ModelZoo()
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        app.builder.model_args(app.get_spec("resnet18"), BuildRequest(cfg=DefaultCfg(), model_args={"num_classes": 3}))


def test_bad_names_and_values() -> None:
    with pytest.raises(UnknownModelError, match="resnet18"):
        zoo.create_model("resnet19")
    with pytest.raises(UnknownModelError, match="tag"):
        zoo.create_model("resnet18.nope")
    with pytest.raises(InvalidValueError, match="output_stride"):
        zoo.create_model("resnet18", output_stride=4)
    with pytest.raises(InvalidValueError, match="global_pool"):
        zoo.create_model("resnet18", global_pool="")
    with pytest.raises(InvalidValueError, match="num_classes"):
        zoo.create_model("resnet18", num_classes=-1)
    with pytest.raises(InvalidValueError, match="crop"):
        zoo.create_model("resnet18", pretrained_cfg_overlay={"crop_pct": 0})


class Toy(ZooModule):
    """A custom model an application registers."""

    def __init__(self, *, num_classes: int = 5, in_chans: int = 3, hidden: int = 8) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = hidden
        self.body = nn.Conv2d(in_chans, hidden, 3)
        self.head = nn.Linear(hidden, num_classes)
        self.feature_info = [FeatureInfo(index=0, module="body", num_chs=hidden, reduction=1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        out: torch.Tensor = x if pre_logits else self.head(x)
        return out


class NotAZooModule(nn.Module):
    """A constructor result without the model surface."""

    def __init__(self, *, num_classes: int = 5, in_chans: int = 3) -> None:
        super().__init__()


def test_custom_registry_is_invisible_to_default() -> None:
    reg = Registry()
    reg.register_model("toy_net", default_cfgs=[DefaultCfg(num_classes=5, tag="base")], hidden=4)(Toy)
    app = ModelZoo(registry=reg)
    model = app.create_model("toy_net", num_classes=3)
    assert isinstance(model, Toy)
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 3)
    assert model.num_features == 4
    assert app.list_models() == ["toy_net"]
    assert not zoo.is_model("toy_net")
    with pytest.raises(UnknownModelError):
        zoo.create_model("toy_net")
    with pytest.raises(InvalidArgumentError, match="depth"):
        app.create_model("toy_net", depth=3)
    # issue 20 changed this contract (a class that was not a ZooModule was refused at registration, a function
    # returning one when it built): any nn.Module constructor registers and builds
    reg.register_model("plain_net")(NotAZooModule)
    assert isinstance(app.create_model("plain_net"), NotAZooModule)
    reg.register_model("plain_fn")(lambda **kw: NotAZooModule(**kw))
    assert isinstance(app.create_model("plain_fn"), NotAZooModule)
    # a function is only known by what it returns, so one that returns no nn.Module is refused when it builds
    reg.register_model("not_a_module")(lambda **kw: object())  # type: ignore[type-var]  # no nn.Module: the point
    with pytest.raises(InvalidArgumentError, match=r"not_a_module.*not a torch\.nn\.Module"):
        app.create_model("not_a_module")


def test_extending_the_builtin_catalogue() -> None:
    reg = builtin_registry()
    reg.register_model("toy_net")(Toy)
    app = ModelZoo(registry=reg)
    assert app.list_models(["toy*", "resnet18"]) == ["resnet18", "toy_net"]
    assert "toy_net" not in zoo.list_models()


def test_options_without_a_service_fail_clearly() -> None:
    bare = Builder()
    spec = ModelZoo().get_spec("resnet18")
    with pytest.raises(FeatureNotAvailableError, match="WeightLoader"):
        bare.build(spec, BuildRequest(cfg=spec.default_cfg, pretrained=True))
    with pytest.raises(FeatureNotAvailableError, match="FeatureWrapperFactory"):
        bare.build(spec, BuildRequest(cfg=spec.default_cfg, features_only=True))
    with pytest.raises(InvalidValueError, match="features_only"):
        zoo.create_model("resnet18", out_indices=(1,))


def test_model_zoo_defaults_to_the_standard_services() -> None:
    reg = Registry()
    reg.register_model("toy_net", default_cfgs=[DefaultCfg(num_classes=5)])(Toy)
    app = ModelZoo(registry=reg)
    feats = app.create_model("toy_net", features_only=True)
    assert feats.feature_info.channels() == [8]
    assert isinstance(app.builder.weight_loader, CachedWeightLoader)


def test_listing_helpers() -> None:
    # a pattern selects the names it matches, numbers in order of their value (a registry of our own: the
    # built-in catalogue grows)
    reg = Registry()
    for name in ("net101", "net18", "other1", "net18d", "net1", "net2"):
        reg.register_model(name)(Toy)
    assert reg.list_models("net1*") == ["net1", "net18", "net18d", "net101"]
    everything = zoo.list_models()
    matched = zoo.list_models("resnet1*")
    assert {"resnet18", "resnet101", "resnet152"} <= set(matched)
    assert matched == [n for n in everything if fnmatch.fnmatchcase(n, "resnet1*")]
    assert matched.index("resnet18") < matched.index("resnet101")
    assert "resnet" in zoo.list_modules()
    assert "resnet50.a1_in1k" in zoo.list_pretrained("resnet50*")
    assert zoo.is_model("resnet50.a1_in1k")
    assert issubclass(zoo.ZooError, Exception)
    assert isinstance(UnknownModelError("x", []), ZooError)


def test_out_indices_that_is_not_a_sequence_names_the_taps() -> None:
    with pytest.raises(InvalidFeatureRequestError, match=r"out_indices=3 is invalid.*0=act1.*4=layer4"):
        zoo.create_model("resnet18", features_only=True, out_indices=3)  # type: ignore[call-overload]  # the point: a bare int
