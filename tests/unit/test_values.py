"""Domain values: validation at construction, immutability, overlays."""

from __future__ import annotations

import attrs
import pytest

from zoo.domain import DefaultCfg, FeatureCfg, FeatureInfo, InvalidValueError, ModelSpec, UnknownModelError, ZooError


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_classes", -1),
        ("num_classes", 1.5),
        ("input_size", (3, 224)),
        ("input_size", (3, 224, "224")),
        ("input_size", (3, 0, 224)),
        ("pool_size", (7,)),
        ("crop_pct", 0.0),
        ("crop_pct", 1.2),
        ("interpolation", "lanczos9"),
        ("sha256", "abc"),
        ("tag", "bad tag"),
    ],
)
def test_invalid_field_raises_naming_field_and_value(field: str, value: object) -> None:
    with pytest.raises(InvalidValueError) as err:
        DefaultCfg(**{field: value})  # type: ignore[arg-type]  # deliberately wrong values
    assert field in str(err.value)
    assert repr(value) in str(err.value)


def test_mean_std_length_must_match_input_channels() -> None:
    with pytest.raises(InvalidValueError, match="mean"):
        DefaultCfg(mean=(0.5, 0.5))
    with pytest.raises(InvalidValueError, match="std"):
        DefaultCfg(input_size=(1, 32, 32), mean=(0.5,), std=(0.2, 0.2, 0.2))
    with pytest.raises(InvalidValueError, match="positive"):
        DefaultCfg(std=(0.2, 0.0, 0.2))
    assert DefaultCfg(input_size=(1, 32, 32), mean=(0.5,), std=(0.25,)).mean == (0.5,)


def test_lists_become_tuples_and_ints_become_floats() -> None:
    cfg = DefaultCfg.from_dict({"input_size": [3, 96, 96], "mean": [0, 0, 0], "std": [1, 1, 1]})
    assert cfg.input_size == (3, 96, 96)
    assert cfg.mean == (0.0, 0.0, 0.0)
    assert hash(cfg) == hash(DefaultCfg.from_dict(cfg.to_dict()))
    assert DefaultCfg.from_dict(cfg.to_dict()) == cfg


def test_values_are_frozen() -> None:
    cfg = DefaultCfg()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.num_classes = 10  # type: ignore[misc]  # the point: assignment must fail


def test_evolve_validates_and_refuses_unknown_keys() -> None:
    cfg = DefaultCfg(tag="x")
    assert cfg.evolve({"num_classes": 10}).num_classes == 10
    assert cfg.num_classes == 1000
    with pytest.raises(InvalidValueError, match="num_clases"):
        cfg.evolve({"num_clases": 10})
    with pytest.raises(InvalidValueError, match="crop_pct"):
        cfg.evolve({"crop_pct": 2.0})


def test_has_weights() -> None:
    assert not DefaultCfg().has_weights
    assert DefaultCfg(url="https://x/y.pth").has_weights
    assert DefaultCfg(hf_hub_id="org/repo").has_weights
    assert DefaultCfg(file="/tmp/w.safetensors").has_weights


def test_feature_values() -> None:
    with pytest.raises(InvalidValueError, match="reduction"):
        FeatureInfo(index=0, module="layer1", num_chs=64, reduction=0)
    with pytest.raises(InvalidValueError, match="module"):
        FeatureInfo(index=0, module="layer 1", num_chs=64, reduction=4)
    with pytest.raises(InvalidValueError, match="feature_cls"):
        FeatureCfg(feature_cls="tuple")  # type: ignore[arg-type]  # deliberately wrong
    with pytest.raises(InvalidValueError, match="out_indices"):
        FeatureCfg(out_indices=())
    assert FeatureCfg(out_indices=[1, 2]).out_indices == (1, 2)


def _build() -> None:
    """A constructor stand-in."""


def test_model_spec() -> None:
    a, b = DefaultCfg(tag="a"), DefaultCfg(tag="b", url="https://x/b.pth")
    spec = ModelSpec(name="net", family="tests", constructor=_build, default_cfgs=(a, b))  # type: ignore[arg-type]  # no real module needed
    assert spec.default_cfg is a
    assert spec.tags == ("a", "b")
    assert spec.has_pretrained
    assert spec.get_cfg("b") is b
    assert spec.get_cfg(None) is a
    with pytest.raises(UnknownModelError, match=r"net\.c"):
        spec.get_cfg("c")
    with pytest.raises(InvalidValueError, match="unique"):
        ModelSpec(name="net", family="t", constructor=_build, default_cfgs=(a, a))  # type: ignore[arg-type]  # as above
    with pytest.raises(InvalidValueError, match="name"):
        ModelSpec(name="Net-1", family="t", constructor=_build)  # type: ignore[arg-type]  # as above
    args = {"depth": 3}
    spec = ModelSpec(name="net", family="t", constructor=_build, model_args=args)  # type: ignore[arg-type]  # as above
    args["depth"] = 4
    assert spec.model_args["depth"] == 3
    with pytest.raises(TypeError):
        spec.model_args["depth"] = 5  # type: ignore[index]  # read-only mapping


def test_every_error_is_a_zoo_error() -> None:
    assert issubclass(InvalidValueError, ZooError)
    assert issubclass(UnknownModelError, ZooError)
    assert isinstance(UnknownModelError("resnt50", ["resnet50"]), LookupError)
