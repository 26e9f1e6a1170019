"""save_pretrained and local-dir:/hf-hub: names: config.json + weights in the hub's model-card layout."""

from __future__ import annotations

import functools
import json
import socket
import warnings
from pathlib import Path
from typing import cast

import pytest
import torch
from safetensors.torch import load_file

import zoo
from weights_support import CheckpointServer, torch_bytes
from zoo.api import ModelZoo
from zoo.archs.base import ZooModule
from zoo.domain import BuildRecord, DefaultCfg
from zoo.domain.errors import (
    FeatureNotAvailableError,
    HubRepoNotFoundError,
    InvalidArgumentError,
    InvalidValueError,
    SavedModelError,
    WeightsUnavailableError,
)
from zoo.domain.protocols import WeightLoader
from zoo.services.weights import StateDictLoader

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


@functools.cache
def fine_tuned() -> ZooModule:
    """resnet18 with a 10-class head, a model keyword, a drop rate, and weights and statistics moved off their init."""
    torch.manual_seed(1)
    return moved_off_init(zoo.create_model("resnet18", num_classes=10, output_stride=16, drop_rate=0.25))


def moved_off_init(model: ZooModule) -> ZooModule:
    """model in eval mode with every weight and statistic moved off its init (the zero-init norms included)."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.save_pretrained(fine_tuned(), tmp_path_factory.mktemp("saved") / "r18-ft")


def test_config_is_the_hub_model_card_layout(saved_dir: Path) -> None:
    assert sorted(p.name for p in saved_dir.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((saved_dir / "config.json").read_text())
    assert config["architecture"] == "resnet18"
    assert (config["num_classes"], config["num_features"], config["global_pool"]) == (10, 512, "avg")
    # the keywords that rebuild the model; drop rates are training settings and stay out, as timm has it
    assert config["model_args"] == {"output_stride": 16, "num_classes": 10, "in_chans": 3, "global_pool": "avg"}
    cfg = config["pretrained_cfg"]
    assert cfg["num_classes"] == 10
    assert (cfg["classifier"], cfg["first_conv"], cfg["custom_load"]) == ("fc", "conv1", False)
    assert not {"url", "hf_hub_id", "file", "sha256", "check_hash"} & set(cfg)  # weights, not a source
    assert "label_names" not in config


def test_fine_tuned_model_round_trips(saved_dir: Path) -> None:
    model = zoo.create_model(f"local-dir:{saved_dir}", pretrained=True).eval()
    assert model.num_classes == 10
    classifier = model.get_classifier()
    assert isinstance(classifier, torch.nn.Linear)
    assert torch.equal(classifier.weight, fine_tuned().get_classifier().weight)  # type: ignore[arg-type]
    with torch.no_grad():
        assert torch.equal(model(X), fine_tuned()(X))
    assert model.build_record.model_args["output_stride"] == 16
    cfg = zoo.get_default_cfg(f"local-dir:{saved_dir}")
    assert (cfg.file, cfg.url, cfg.hf_hub_id, cfg.num_classes) == (str(saved_dir / "model.safetensors"), "", "", 10)
    # as in timm, the name alone builds the architecture; pretrained=True loads the weights
    fresh = zoo.create_model(f"local-dir:{saved_dir}").eval()
    assert fresh.num_classes == 10
    assert not torch.equal(fresh.get_classifier().weight, classifier.weight)  # type: ignore[arg-type]


def test_caller_arguments_win_over_saved_ones(saved_dir: Path) -> None:
    with pytest.warns(UserWarning, match="classifier"):
        model = zoo.create_model(f"local-dir:{saved_dir}", pretrained=True, num_classes=3, output_stride=32)
    assert model.num_classes == 3
    assert model.build_record.model_args["output_stride"] == 32


def test_label_names_round_trip_while_the_head_is_unchanged(tmp_path: Path) -> None:
    names = [f"kind{i}" for i in range(10)]
    first = zoo.save_pretrained(fine_tuned(), tmp_path / "a", label_names=names)
    loaded = zoo.create_model(f"local-dir:{first}", pretrained=True)
    assert loaded.build_record.label_names == tuple(names)
    second = zoo.save_pretrained(loaded, tmp_path / "b")  # carried by the model, not passed again
    assert json.loads((second / "config.json").read_text())["label_names"] == names
    loaded.reset_classifier(4)
    third = zoo.save_pretrained(loaded, tmp_path / "c")
    config = json.loads((third / "config.json").read_text())
    assert "label_names" not in config  # the names described the old head
    assert config["num_classes"] == config["model_args"]["num_classes"] == 4
    with pytest.raises(InvalidValueError, match="label_names has 2 names; the model has num_classes=10"):
        zoo.save_pretrained(fine_tuned(), tmp_path / "d", label_names=["a", "b"])
    assert not (tmp_path / "d").exists()


def test_hf_hub_name_reads_a_repo_from_the_loopback_hub(
    saved_dir: Path, server: CheckpointServer, cache_dir: Path
) -> None:
    files = {p.name: p.read_bytes() for p in saved_dir.iterdir()}
    server.add_repo("me/r18-ft", files)
    assert zoo.get_default_cfg("hf-hub:me/r18-ft").hf_hub_id == "me/r18-ft"
    model = zoo.create_model("hf-hub:me/r18-ft", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(model(X), fine_tuned()(X))
    with pytest.raises(HubRepoNotFoundError, match="'me/absent' not found"):
        zoo.create_model("hf-hub:me/absent")


def test_timm_style_directory_with_a_torch_file_loads(tmp_path: Path) -> None:
    # the layout timm's save_for_hf writes by default: pytorch_model.bin, extra pretrained_cfg keys, labels by index
    source = fine_tuned()
    (tmp_path / "pytorch_model.bin").write_bytes(torch_bytes(source.state_dict()))
    config = {
        "architecture": "resnet18",
        "num_classes": 10,
        "num_features": 512,
        "global_pool": "avg",
        "label_names": {str(i): f"n{i}" for i in range(10)},
        "model_args": {"num_classes": 10, "output_stride": 16, "global_pool": "avg", "in_chans": 3},
        "pretrained_cfg": {
            "tag": "a1_in1k",
            "custom_load": False,
            "input_size": [3, 224, 224],
            "interpolation": "bicubic",
            "crop_pct": 0.95,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "num_classes": 10,
            "pool_size": None,
            "first_conv": "conv1",
            "classifier": "fc",
            "origin_url": "https://example.invalid",
            "paper_ids": "arXiv:0000.00000",
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # keys zoo has no field for are timm's metadata, not a loss
        model = zoo.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(model(X), source(X))
    assert model.build_record.label_names == tuple(f"n{i}" for i in range(10))
    assert model.default_cfg.tag == "a1_in1k"


def test_unreadable_saved_models_are_typed_errors_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(SavedModelError, match=rf"{tmp_path / 'absent'} is not a directory"):
        zoo.create_model(f"local-dir:{tmp_path / 'absent'}")
    with pytest.raises(SavedModelError, match=rf"{tmp_path / 'config.json'} does not exist"):
        zoo.create_model(f"local-dir:{tmp_path}")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SavedModelError, match=rf"{tmp_path / 'config.json'}: cannot read it as JSON"):
        zoo.create_model(f"local-dir:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet_18", "pretrained_cfg": {}}))
    with pytest.raises(SavedModelError, match=r"config\.json: architecture 'resnet_18' .*did you mean 'resnet18'"):
        zoo.create_model(f"local-dir:{tmp_path}")
    bad_args = {"architecture": "resnet18", "pretrained_cfg": {}, "model_args": {"img_size": 64}}
    (tmp_path / "config.json").write_text(json.dumps(bad_args))
    with pytest.raises(InvalidArgumentError, match=r"config\.json: model_args 'img_size' are not keywords of resnet18"):
        zoo.create_model(f"local-dir:{tmp_path}")
    odd_cfg = {"architecture": "resnet18", "pretrained_cfg": {"interpolation": "lanczos", "num_classes": 3}}
    (tmp_path / "config.json").write_text(json.dumps(odd_cfg))
    with pytest.warns(UserWarning, match=r"left at zoo's defaults: interpolation='lanczos'"):
        assert zoo.create_model(f"local-dir:{tmp_path}").num_classes == 3
    with pytest.raises(InvalidValueError, match=r"hf-hub name='\.\./x' is invalid"):
        zoo.create_model("hf-hub:../x")


def test_saving_needs_a_zoo_built_model_and_json_keywords(tmp_path: Path) -> None:
    with pytest.raises(SavedModelError, match=r"not built by zoo\.create_model.*architecture="):
        zoo.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "lin")
    model = zoo.create_model("resnet18", num_classes=2, attn_layer=None)
    odd = BuildRecord(architecture="resnet18", model_args={"attn_layer": object()})
    object.__setattr__(model, "build_record", odd)
    with pytest.raises(SavedModelError, match=r"attn_layer=<object .*> cannot be written to config\.json"):
        zoo.save_pretrained(model, tmp_path / "odd")
    assert not (tmp_path / "odd").exists()


class FakeHub:
    """A WeightLoader serving one saved directory as hub repo `repo`: records every call, touches no network."""

    def __init__(self, repo: str, directory: Path) -> None:
        self.repo, self.directory = repo, directory
        self.fetched: list[tuple[str, str]] = []
        self.loaded: list[DefaultCfg] = []

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> dict[str, torch.Tensor]:
        self.loaded.append(cfg)
        assert cfg.hf_hub_id == self.repo
        assert checkpoint_path is None
        return dict(load_file(self.directory / "model.safetensors"))

    def fetch_hub_file(self, hub_id: str, filename: str) -> Path:
        self.fetched.append((hub_id, filename))
        if hub_id != self.repo:
            raise HubRepoNotFoundError(f"{hub_id!r} not found in the fake hub")
        return self.directory / filename


def test_hf_hub_name_is_served_by_the_injected_loader(saved_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("an injected loader must serve hf-hub: names without the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    fake = FakeHub("me/r18-ft@v2", saved_dir)
    app = ModelZoo(weight_loader=fake)
    model = app.create_model("hf-hub:me/r18-ft@v2", pretrained=True).eval()
    assert fake.fetched == [("me/r18-ft@v2", "config.json")]
    assert [cfg.hf_hub_id for cfg in fake.loaded] == ["me/r18-ft@v2"]
    with torch.no_grad():
        assert torch.equal(model(X), fine_tuned()(X))
    assert app.get_default_cfg("hf-hub:me/r18-ft@v2").num_classes == 10
    with pytest.raises(HubRepoNotFoundError, match="'me/other' not found in the fake hub"):
        app.create_model("hf-hub:me/other")


def test_hf_hub_names_need_a_loader_that_fetches_hub_files(saved_dir: Path) -> None:
    # an in-memory loader has no hub: it refuses by name; a loader written without the method is named too
    with pytest.raises(WeightsUnavailableError, match=r"config\.json of hub repo 'me/r18-ft' is not available"):
        ModelZoo(weight_loader=StateDictLoader({})).create_model("hf-hub:me/r18-ft")

    class OldLoader:
        def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> dict[str, torch.Tensor]:
            raise AssertionError("not reached")

    old = ModelZoo(weight_loader=cast(WeightLoader, OldLoader()))  # as an untyped caller would hand it in
    with pytest.raises(FeatureNotAvailableError, match=r"OldLoader\) has no fetch_hub_file"):
        old.create_model("hf-hub:me/r18-ft")


# a caller's layout for resnet18: the first block's inner width 64 -> 16, layer2's first block 128 -> 40
NARROW = (
    "layer1.0.conv1.weight:[16, 64, 3, 3]***layer1.0.bn1.weight:[16]***layer1.0.conv2.weight:[64, 16, 3, 3]***"
    "layer2.0.conv1.weight:[40, 64, 3, 3]***layer2.0.bn1.weight:[40]***layer2.0.conv2.weight:[128, 40, 3, 3]"
)


def test_a_custom_prune_spec_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = moved_off_init(zoo.create_model("resnet18", num_classes=10, prune_spec=NARROW))
    assert model.build_record.prune_spec == NARROW
    saved = zoo.save_pretrained(model, tmp_path / "narrow")
    assert json.loads((saved / "config.json").read_text())["prune_spec"] == NARROW
    loaded = zoo.create_model(f"local-dir:{saved}", pretrained=True).eval()
    assert loaded.get_parameter("layer1.0.conv1.weight").shape == (16, 64, 3, 3)
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))
    assert loaded.build_record.prune_spec == NARROW  # so saving it again keeps the layout
    assert json.loads((zoo.save_pretrained(loaded, tmp_path / "again") / "config.json").read_text()) == json.loads(
        (saved / "config.json").read_text()
    )


def test_a_published_pruned_name_round_trips_by_its_name(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = moved_off_init(zoo.create_model("efficientnet_b1_pruned", num_classes=5))
    saved = zoo.save_pretrained(model, tmp_path / "b1p")
    config = json.loads((saved / "config.json").read_text())
    assert config["architecture"] == "efficientnet_b1_pruned"
    assert "prune_spec" not in config  # the name carries its layout, as timm's config.json has it
    loaded = zoo.create_model(f"local-dir:{saved}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))


def test_a_model_changed_after_creation_is_not_saved_unloadable(tmp_path: Path) -> None:
    from zoo.services.pruner import ChannelPruner

    by_hand = ChannelPruner().apply(zoo.create_model("resnet18", num_classes=10), NARROW)
    with pytest.raises(
        SavedModelError,
        match=r"as 'resnet18' to .*: its layers are not the ones config\.json rebuilds \(model_args and the "
        r"architecture's own channel layout\): layer1\.0\.conv1\.weight is \(16, 64, 3, 3\), the rebuilt "
        r"model's is \(64, 64, 3, 3\);.* \(and \d+ more\)\. .*create_model\(name, prune_spec=\.\.\.\)",
    ):
        zoo.save_pretrained(by_hand, tmp_path / "by-hand")
    assert not (tmp_path / "by-hand").exists()
    # the same layout given to create_model is recorded, so that model saves and loads
    recorded = zoo.create_model("resnet18", num_classes=10, prune_spec=NARROW)
    recorded.load_state_dict(by_hand.state_dict())
    assert zoo.save_pretrained(recorded, tmp_path / "recorded").is_dir()
    # a layer replaced by hand: keys the architecture does not have
    extra = zoo.create_model("resnet18", num_classes=10, prune_spec=NARROW)
    extra.fc = torch.nn.Sequential(torch.nn.Linear(512, 10))  # the edit under test
    with pytest.raises(SavedModelError, match=r"fc\.weight is missing; .*fc\.0\.weight is not in the rebuilt model"):
        zoo.save_pretrained(extra, tmp_path / "extra")
    with pytest.raises(SavedModelError, match=r"config\.json would not build it back: .*'not_a_model'"):
        zoo.save_pretrained(recorded, tmp_path / "odd", architecture="not_a_model")
    assert not (tmp_path / "extra").exists()
    assert not (tmp_path / "odd").exists()


def test_a_saved_prune_spec_that_is_not_one_is_named(tmp_path: Path) -> None:
    config = {"architecture": "resnet18", "pretrained_cfg": {}, "prune_spec": "layer1.0.conv1.weight:[16, x]"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SavedModelError, match=r"config\.json: prune_spec is invalid: .*layer1\.0\.conv1\.weight"):
        zoo.create_model(f"local-dir:{tmp_path}")
