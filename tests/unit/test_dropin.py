"""Drop-in for timm-style code: get_pretrained_cfg, create_model's timm keywords, dict-like cfgs and taps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.fx

import zoo
from weights_support import TINY_CFG, TinyNet, cache_files, safetensors_bytes, tiny_checkpoint
from zoo.api import ModelZoo
from zoo.domain import (
    DefaultCfg,
    FeatureInfo,
    FeatureNotAvailableError,
    InvalidArgumentError,
    InvalidFeatureRequestError,
    InvalidValueError,
    UnknownModelError,
)
from zoo.domain.cfg_request import DESCRIPTIVE_KEYS, UNSUPPORTED_KEYS, cfg_from_mapping
from zoo.domain.values import ModelSpec
from zoo.services.features import FeatureTaps
from zoo.services.registry import Registry
from zoo.services.weights import CachedWeightLoader, StateDictLoader

# -- get_pretrained_cfg -----------------------------------------------------------------------


def test_get_pretrained_cfg_by_name_and_tag() -> None:
    default = zoo.get_pretrained_cfg("resnet18")
    assert isinstance(default, DefaultCfg)
    assert default == zoo.get_default_cfg("resnet18") == zoo.api.default_zoo().get_spec("resnet18").default_cfg
    tagged = zoo.get_pretrained_cfg("resnet18.tv_in1k")
    assert tagged.tag == "tv_in1k"
    assert zoo.api.default_zoo().get_pretrained_cfg("resnet18.tv_in1k") is tagged


def test_get_pretrained_cfg_names_what_is_valid() -> None:
    tags = zoo.api.default_zoo().get_spec("resnet18").tags
    with pytest.raises(UnknownModelError, match=r"unknown tag 'resnet18\.nope'") as e:
        zoo.get_pretrained_cfg("resnet18.nope")
    assert all(f"resnet18.{t}" in str(e.value) for t in tags)  # a name's tags are few: every one is listed
    with pytest.raises(UnknownModelError, match=r"did you mean 'resnet18'.*zoo\.list_models"):
        zoo.get_pretrained_cfg("resnt18")
    with pytest.raises(UnknownModelError, match=r"unknown model 'xyzzy'; zoo\.list_models"):
        zoo.get_pretrained_cfg("xyzzy")


def test_pretrained_cfg_copy_and_to_dict() -> None:
    cfg = zoo.create_model("resnet18").pretrained_cfg
    copied = cfg.copy()
    assert type(copied) is dict
    assert copied == dict(cfg)
    copied["num_classes"] = 3  # a plain dict: changing it leaves the cfg as it was
    assert cfg.num_classes == 1000
    plain = cfg.to_dict()
    assert plain["input_size"] == list(cfg.input_size)
    assert DefaultCfg.from_dict(plain) == cfg


# -- create_model(pretrained_cfg=...) ----------------------------------------------------------


def test_pretrained_cfg_as_value_mapping_or_tag() -> None:
    mine = DefaultCfg(num_classes=7, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv="conv1", classifier="fc")
    assert zoo.create_model("resnet18", pretrained_cfg=mine).pretrained_cfg == mine
    # a mapping replaces the cfg (timm's PretrainedCfg(**cfg)): fields it leaves out take DefaultCfg's defaults
    model = zoo.create_model("resnet18", pretrained_cfg={"num_classes": 7, "crop_pct": 1.0})
    assert model.num_classes == 7
    assert model.pretrained_cfg == DefaultCfg(num_classes=7, crop_pct=1.0)
    # the usual round trip: a model's cfg, copied, changed and handed back; the overlay applies after it
    cfg = zoo.get_pretrained_cfg("resnet18.tv_in1k").copy()
    cfg["crop_pct"] = 0.95
    built = zoo.create_model("resnet18", pretrained_cfg=cfg, pretrained_cfg_overlay={"interpolation": "bicubic"})
    assert built.pretrained_cfg.tag == "tv_in1k"
    assert (built.pretrained_cfg.crop_pct, built.pretrained_cfg.interpolation) == (0.95, "bicubic")
    # a str names a tag, as in timm
    assert zoo.create_model("resnet18", pretrained_cfg="tv_in1k").pretrained_cfg.tag == "tv_in1k"
    with pytest.raises(InvalidArgumentError, match="give the tag once"):
        zoo.create_model("resnet18.a1_in1k", pretrained_cfg="tv_in1k")
    with pytest.raises(UnknownModelError, match="valid tags"):
        zoo.create_model("resnet18", pretrained_cfg="nope")
    with pytest.raises(InvalidArgumentError, match="pretrained_cfg=3"):
        zoo.create_model("resnet18", pretrained_cfg=3)  # type: ignore[call-overload]  # a caller's mistake


def test_timm_dict_cfgs_keys_decided_one_by_one() -> None:
    timm_style: dict[str, object] = {
        **zoo.get_pretrained_cfg("resnet18.tv_in1k").copy(),
        # what timm's dicts carry beside DefaultCfg's fields: descriptive, or unset behavioural keys
        "architecture": "resnet18",
        "origin_url": "https://example.org",
        "paper_ids": "arXiv:1512.03385",
        "custom_load": False,
        "hf_hub_filename": None,
        "label_offset": None,
    }
    assert cfg_from_mapping(timm_style) == zoo.get_pretrained_cfg("resnet18.tv_in1k")
    for key in UNSUPPORTED_KEYS:
        with pytest.raises(InvalidValueError, match=f"pretrained_cfg\\['{key}'\\].*not supported"):
            cfg_from_mapping({key: "set" if key != "custom_load" else True})
    with pytest.raises(InvalidValueError, match=r"unknown key\(s\) \['colour'\]; valid keys: url, hf_hub_id") as e:
        zoo.create_model("resnet18", pretrained_cfg={"colour": "red"})
    assert all(k in str(e.value) for k in DESCRIPTIVE_KEYS)
    with pytest.raises(InvalidValueError, match=r"DefaultCfg\.crop_pct"):
        cfg_from_mapping({"crop_pct": 2.0})  # a field's value is checked as DefaultCfg checks it


# -- create_model's other timm keywords ----------------------------------------------------------


def test_layer_config_switches_are_checked_and_change_nothing() -> None:
    torch.manual_seed(0)
    plain = zoo.create_model("resnet18")
    torch.manual_seed(0)
    switched = zoo.create_model("resnet18", scriptable=True, exportable=True, no_jit=False)
    assert type(switched) is type(plain)
    for (k, a), (_, b) in zip(plain.state_dict().items(), switched.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    for keyword in ("scriptable", "exportable", "no_jit"):
        with pytest.raises(InvalidValueError, match=f"{keyword}='yes' is invalid"):
            zoo.create_model("resnet18", **{keyword: "yes"})  # type: ignore[call-overload]  # a caller's mistake


def test_empty_checkpoint_path_means_none() -> None:
    model = zoo.create_model("resnet18", checkpoint_path="")
    assert model.num_classes == 1000  # built as without one: no checkpoint was looked for


def tiny_zoo(cfg: DefaultCfg, loader: object | None = None) -> ModelZoo:
    reg = Registry()
    reg.register(ModelSpec(name="tiny_net", family="tests.tiny", constructor=TinyNet, default_cfgs=(cfg,)))
    weights = CachedWeightLoader(progress=False) if loader is None else loader
    return ModelZoo(registry=reg, weight_loader=weights)  # type: ignore[arg-type]  # a test hands in any loader


def test_cache_dir_is_where_the_call_fetches_to(tmp_path: Path, cache_dir: Path) -> None:
    published = tmp_path / "published" / "tiny.safetensors"
    published.parent.mkdir()
    published.write_bytes(safetensors_bytes(tiny_checkpoint()))
    app = tiny_zoo(TINY_CFG.evolve({"url": published.as_uri()}))  # a file: url goes through the cache, offline
    mine = tmp_path / "mine"
    model = app.create_model("tiny_net", pretrained=True, cache_dir=mine)
    assert torch.equal(model.state_dict()["fc.weight"], tiny_checkpoint()["fc.weight"])
    assert [p.name for p in cache_files(mine)] == ["tiny.safetensors"]
    assert cache_files(cache_dir) == []  # the loader's own cache (ZOO_CACHE_DIR) was not written
    app.create_model("tiny_net", pretrained=True, cache_dir=str(mine))  # a str path, and a cache hit there
    assert len(cache_files(mine)) == 1
    app.create_model("tiny_net", pretrained=True, cache_dir="")  # '' means none: the loader's cache
    assert len(cache_files(cache_dir)) == 1


def test_cache_dir_needs_a_loader_that_can_move(tmp_path: Path) -> None:
    class Fixed(StateDictLoader):
        with_cache_dir = None  # type: ignore[assignment]  # a loader without the capability

    app = tiny_zoo(TINY_CFG, Fixed(tiny_checkpoint()))
    with pytest.raises(FeatureNotAvailableError, match=r"cache_dir=.*RelocatableCache"):
        app.create_model("tiny_net", pretrained=True, cache_dir=tmp_path)
    app.create_model("tiny_net", cache_dir=tmp_path)  # no weights asked for: nothing to fetch, nothing refused
    # a loader fetching nothing takes any cache_dir
    tiny_zoo(TINY_CFG, StateDictLoader(tiny_checkpoint())).create_model("tiny_net", pretrained=True, cache_dir=tmp_path)
    with pytest.raises(InvalidValueError, match="cache_dir=3 is invalid"):
        app.create_model("tiny_net", cache_dir=3)  # type: ignore[call-overload]  # a caller's mistake


# -- feature_info as timm's lists of dicts ------------------------------------------------------


def test_a_classifiers_feature_info_reads_as_dicts() -> None:
    model = zoo.create_model("resnet18")
    last = model.feature_info[-1]
    assert last["num_chs"] == model.num_features == 512
    assert dict(last) == {"num_chs": 512, "reduction": 32, "module": "layer4"}
    assert "index" not in last  # an attribute, not one of timm's keys
    assert last.index == 4
    assert last.get("stage") is None
    with pytest.raises(KeyError):
        last["stage"]


def test_feature_taps_accessors_take_an_index() -> None:
    taps = tuple(FeatureInfo(index=i, module=f"s{i}", num_chs=8 * (i + 1), reduction=2 ** (i + 1)) for i in range(4))
    info = FeatureTaps(taps, (1, 2, 3))
    assert info.channels() == [16, 24, 32]
    assert info.channels(-1) == 32
    assert info.reduction(0) == 4
    assert info.module_name(1) == "s2"
    assert info.channels([2, 0]) == [32, 16]
    assert info.get("reduction", -2) == 8
    assert info.get_dicts(idx=0) == {"num_chs": 16, "reduction": 4, "module": "s1"}
    assert info.get_dicts(["num_chs"]) == [{"num_chs": c} for c in (16, 24, 32)]
    assert info[-1]["num_chs"] == 32
    bad_indices: tuple[object, ...] = (3, -4, True, "0", 1.0)
    for bad in bad_indices:
        with pytest.raises(InvalidFeatureRequestError, match="idx="):
            info.channels(bad)  # type: ignore[call-overload]  # a caller's mistake
    with pytest.raises(InvalidValueError, match="'num_chs', 'reduction', 'module'"):
        info.get("stage")
    with pytest.raises(InvalidValueError, match="keys="):
        info.get_dicts("num_chs")


def test_an_extractors_feature_info_by_index() -> None:
    extractor = zoo.create_model("resnet18", features_only=True, out_indices=(1, 3))
    assert extractor.feature_info.channels(-1) == 256
    assert extractor.feature_info.reduction(0) == 4
    assert extractor.feature_info.module_name(1) == "layer3"
    assert extractor.feature_info[-1]["num_chs"] == 256


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The TorchScript type system doesn't support instance-level annotations:UserWarning")
@pytest.mark.parametrize("kind", ["list", "dict", "getter"])
def test_a_traced_extractor_scripts(kind: str) -> None:
    extractor = zoo.create_model("resnet18", features_only=True, feature_cls=kind, out_indices=(0, 2)).eval()
    scripted = torch.jit.script(torch.fx.symbolic_trace(extractor))  # fx writes forward's annotations as types
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = extractor(x), scripted(x)
    expected_maps = list(expected.values()) if isinstance(expected, dict) else expected
    got_maps = list(got.values()) if isinstance(got, dict) else got
    for a, b in zip(got_maps, expected_maps, strict=True):
        torch.testing.assert_close(a, b)
