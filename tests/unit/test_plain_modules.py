"""Any nn.Module constructor registers and builds; what needs more of the surface checks it, naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.api import ModelZoo
from zoo.archs.base import ZooModule
from zoo.domain import (
    BuildRecord,
    DefaultCfg,
    FeatureSurfaceError,
    InvalidArgumentError,
    InvalidFeatureRequestError,
    ModelSurfaceError,
    SavedModelError,
    SaveSurfaceError,
    WeightsUnavailableError,
)
from zoo.domain.protocols import (
    ClassifierHead,
    Configured,
    Intermediates,
    ModelSurface,
    Recorded,
    Tapped,
    WeightLoader,
    surface_members,
)
from zoo.domain.values import FeatureInfo
from zoo.services.registry import Registry

HEAD_MEMBERS = ("num_classes", "num_features", "forward_head", "get_classifier", "reset_classifier")


class PlainNet(nn.Module):
    """A classifier with none of the model surface, whose constructor takes neither num_classes nor in_chans."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.conv(x).mean((2, 3)))
        return out


def plain_mlp(*, hidden: int = 6) -> nn.Module:
    """A function constructor returning a plain nn.Sequential."""
    return nn.Sequential(nn.Flatten(), nn.Linear(12, hidden), nn.ReLU(), nn.Linear(hidden, 2))


class HeadNet(PlainNet):
    """A plain constructor (no num_classes keyword) whose model has a classifier head to replace."""

    def __init__(self, width: int = 4) -> None:
        super().__init__(width)
        self.num_classes = 5
        self.num_features = width

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        out: torch.Tensor = x if pre_logits else self.fc(x)
        return out

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)


class TappedNet(PlainNet):
    """A plain model with feature_info but no forward_intermediates."""

    def __init__(self, width: int = 4) -> None:
        super().__init__(width)
        self.feature_info = [FeatureInfo(index=0, module="conv", num_chs=width, reduction=1)]


class FakeLoader:
    """A WeightLoader serving one state_dict, recording the cfgs it was asked for."""

    def __init__(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.state_dict = state_dict
        self.asked: list[DefaultCfg] = []

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> dict[str, torch.Tensor]:
        self.asked.append(cfg)
        return {k: v.clone() for k, v in self.state_dict.items()}

    def fetch_hub_file(self, hub_id: str, filename: str) -> Path:
        raise WeightsUnavailableError(f"{filename} of {hub_id!r}: this fake serves no hub files")


PLAIN_CFG = DefaultCfg(num_classes=5, input_size=(3, 8, 8), hf_hub_id="tests/plain")


def plain_zoo(weight_loader: WeightLoader | None = None) -> ModelZoo:
    reg = Registry()
    reg.register_model("plain_net", default_cfgs=[PLAIN_CFG])(PlainNet)
    reg.register_model(plain_mlp)
    reg.register_model("head_net", default_cfgs=[PLAIN_CFG])(HeadNet)
    reg.register_model("tapped_net", default_cfgs=[PLAIN_CFG])(TappedNet)
    return ModelZoo(registry=reg, weight_loader=weight_loader)


def seeded(module: nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        return {k: torch.randn(v.shape, generator=gen) for k, v in module.state_dict().items()}


def test_zoo_modules_have_the_whole_surface() -> None:
    def as_surface(model: ZooModule) -> ModelSurface:
        return model  # mypy checks ZooModule against the Protocol, member by member

    assert surface_members(ClassifierHead) == HEAD_MEMBERS
    assert set(surface_members(ModelSurface)) > set(HEAD_MEMBERS)
    assert as_surface is not None


def test_a_plain_class_and_a_plain_function_build() -> None:
    app = plain_zoo()
    net = app.create_model("plain_net", width=3)
    assert isinstance(net, PlainNet)
    assert not isinstance(net, (ZooModule, HeadNet, TappedNet))
    assert net.conv.out_channels == 3
    assert net(torch.zeros(2, 3, 8, 8)).shape == (2, 5)
    mlp = app.create_model("plain_mlp", hidden=3)
    assert type(mlp) is nn.Sequential
    assert mlp(torch.zeros(2, 3, 2, 2)).shape == (2, 2)
    # the Builder attaches what it attaches to every model; the constructor got only the keywords it takes
    for model, name, args in ((net, "plain_net", {"width": 3}), (mlp, "plain_mlp", {"hidden": 3})):
        assert isinstance(model, Configured)
        assert isinstance(model, Recorded)
        assert model.default_cfg.num_classes == (5 if name == "plain_net" else 1000)
        assert model.build_record == BuildRecord(architecture=name, model_args=args)
        assert not isinstance(model, ClassifierHead)


@pytest.mark.parametrize("name", ["plain_net", "plain_mlp"])
def test_pretrained_loads_matching_weights_through_the_given_loader(name: str) -> None:
    checkpoint = seeded(plain_zoo().create_model(name))
    loader = FakeLoader(checkpoint)
    model = plain_zoo(loader).create_model(name, pretrained=True)
    assert len(loader.asked) == 1
    assert model.state_dict().keys() == checkpoint.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in checkpoint.items())
    assert not any(t.is_meta for t in model.state_dict().values())


def test_num_classes_needs_a_classifier_head_it_names() -> None:
    app = plain_zoo(FakeLoader(seeded(PlainNet())))
    for pretrained in (False, True):
        with pytest.raises(ModelSurfaceError, match=r"num_classes=3 for plain_net \(PlainNet\)") as e:
            app.create_model("plain_net", num_classes=3, pretrained=pretrained)
        assert e.value.missing == HEAD_MEMBERS
        assert ", ".join(HEAD_MEMBERS) in str(e.value)
    # the class count the cfg already describes is no adaptation, but still cannot be checked without a head
    with pytest.raises(ModelSurfaceError, match="lacks num_classes"):
        app.create_model("plain_net", num_classes=5)
    # in_chans has no surface to adapt through: a constructor without the keyword refuses it before any work
    with pytest.raises(InvalidArgumentError, match=r"plain_net does not take in_chans.*in_chans=1"):
        app.create_model("plain_net", in_chans=1)
    assert isinstance(app.create_model("plain_net", in_chans=3), PlainNet)


def test_a_classifier_head_is_replaced_when_the_constructor_cannot_be_asked() -> None:
    app = plain_zoo(FakeLoader(seeded(HeadNet())))
    model = app.create_model("head_net", num_classes=3)
    assert isinstance(model, HeadNet)
    assert model.num_classes == 3
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 3)
    assert model.default_cfg.num_classes == 3
    assert app.create_model("head_net").default_cfg.num_classes == 5


def test_features_only_names_the_taps_it_needs() -> None:
    app = plain_zoo()
    with pytest.raises(FeatureSurfaceError, match=r"PlainNet has no feature_info.*protocols\.Tapped") as e:
        app.create_model("plain_net", features_only=True)
    assert e.value.missing == ("feature_info",)
    # one error for every model surface shortfall, and the features_only error it always was
    assert isinstance(e.value, ModelSurfaceError)
    assert isinstance(e.value, InvalidFeatureRequestError)
    # a model with taps serves the strategies that need nothing more; the getter needs forward_intermediates
    feats = app.create_model("tapped_net", features_only=True, feature_cls="hook")
    assert [t.shape for t in feats.forward_taps(torch.zeros(1, 3, 8, 8))] == [(1, 4, 8, 8)]
    with pytest.raises(FeatureSurfaceError, match="needs forward_intermediates") as e:
        app.create_model("tapped_net", features_only=True, feature_cls="getter")
    assert e.value.missing == ("forward_intermediates",)
    assert not isinstance(app.create_model("tapped_net"), Intermediates)
    assert isinstance(app.create_model("tapped_net"), Tapped)


def test_save_pretrained_names_the_head_it_needs_and_writes_nothing(tmp_path: Path) -> None:
    app = plain_zoo()
    for name in ("plain_net", "plain_mlp"):
        with pytest.raises(SaveSurfaceError, match=r"config\.json describes a classifier head.*lacks num_classes") as e:
            app.save_pretrained(app.create_model(name), tmp_path / name)
        assert e.value.missing == HEAD_MEMBERS
        assert isinstance(e.value, SavedModelError)
        assert isinstance(e.value, ModelSurfaceError)
    assert list(tmp_path.iterdir()) == []


def test_pruning_needs_no_surface() -> None:
    model = plain_zoo().create_model("plain_net", prune_spec="conv.weight:[2, 3, 3, 3]***fc.weight:[5, 2]")
    assert isinstance(model, PlainNet)
    assert model.conv.out_channels == 2
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 5)
