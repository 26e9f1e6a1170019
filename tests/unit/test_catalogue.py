"""The built-in catalogue read from the cfg files, the surface every family shares, and the package root's names."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import zoo
from zoo.api import default_zoo
from zoo.archs.base import ZooModule
from zoo.archs.catalogue import FAMILIES, family_specs
from zoo.archs.regnet import RegNet
from zoo.domain.values import FeatureCfg


def test_a_family_naming_other_models_than_its_cfg_file_is_refused() -> None:
    with pytest.raises(RuntimeError, match=r"without cfgs \['regnet_not_in_the_file'\]"):
        family_specs("zoo.archs.regnet", RegNet, {"regnet_not_in_the_file": {}}, FeatureCfg())


def test_every_family_names_its_classifier_where_its_cfgs_do() -> None:
    for names in FAMILIES.values():
        for name in names:
            spec = default_zoo().get_spec(name)
            assert isinstance(spec.constructor, type)
            assert issubclass(spec.constructor, ZooModule)
            assert {c.classifier for c in spec.default_cfgs} == {spec.constructor.classifier_name}, name


class _OwnHead(ZooModule):
    """A model without the common head: it names no classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 1)


def test_a_model_without_the_common_head_says_so() -> None:
    model = _OwnHead()
    with pytest.raises(NotImplementedError, match="_OwnHead"):
        model.get_classifier()
    with pytest.raises(NotImplementedError, match="_OwnHead"):
        model.reset_classifier(3)
    with pytest.raises(NotImplementedError, match="_OwnHead"):
        model.forward_intermediates(torch.zeros(1, 3, 4, 4))


def test_the_package_root_exports_the_public_classes_lazily() -> None:
    code = (
        "import sys, zoo; print('torch' in sys.modules); "
        "import zoo.archs.base as b, zoo.services.features as f, zoo.services.registry as r, zoo.domain.values as v; "
        "print(zoo.ZooModule is b.ZooModule, zoo.FeatureExtractor is f.FeatureExtractor, "
        "zoo.Registry is r.Registry, zoo.DefaultCfg is v.DefaultCfg)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True", "True", "True"]
    assert {"ZooModule", "FeatureExtractor", "Registry", "DefaultCfg"} <= set(zoo.__all__) & set(dir(zoo))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = zoo.no_such_name
