"""The public functions the CLI is a shell over (issue 20, target 4): zoo.describe (a name described on the meta
device, a model's cost), zoo.weights (fetching a name's weights, zoo's cache) and zoo.artefacts (a derived
prune spec, an export)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from weights_support import cache_files
from zoo.api import ModelZoo
from zoo.artefacts import check_export, derive_prune_spec, export_model
from zoo.describe import count_macs, describe_model, measure_model
from zoo.domain.errors import FeatureNotAvailableError, InvalidValueError, UnknownModelError
from zoo.domain.values import DefaultCfg
from zoo.services import export
from zoo.services.weights import StateDictLoader
from zoo.weights import cache_contents, clear_cache, fetch_weights, weight_loader

CLI = Path(zoo.__file__).parent / "cli"


def test_the_cli_imports_only_the_public_api() -> None:
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("zoo.services", "zoo.archs")), f"{path.name}: {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith(("zoo.services", "zoo.archs")) for a in node.names), path.name


def test_describe_model_gives_the_built_models_counts_without_building_it() -> None:
    described = describe_model("resnet18.a1_in1k")
    assert all(p.is_meta for p in described.layout.parameters())  # no memory, no init
    built = zoo.create_model("resnet18")
    assert described.parameters == sum(p.numel() for p in built.parameters()) == 11_689_512
    assert described.spec.name == "resnet18"
    assert described.cfg == zoo.get_default_cfg("resnet18.a1_in1k")
    assert not described.saved
    assert described.num_features == 512
    assert [t.num_chs for t in described.feature_info] == [64, 64, 128, 256, 512]
    # counted on meta at the cfg's size: the same as on the real model
    assert described.macs() == count_macs(built, 224) == 1_814_073_344
    assert described.macs(112) < described.macs()
    assert "parameters=11689512" in repr(described)


def test_describe_model_of_an_unknown_name_says_so() -> None:
    with pytest.raises(UnknownModelError, match="resnet18"):
        describe_model("resnet19")


def test_cost_functions_check_their_arguments() -> None:
    model = zoo.create_model("resnet18")
    with pytest.raises(InvalidValueError, match="image_size=0"):
        count_macs(model, 0)
    with pytest.raises(InvalidValueError, match="repeats=0"):
        measure_model(model, repeats=0)


def test_derive_then_measure() -> None:
    model = zoo.create_model("resnet18").eval()
    spec, pruned = derive_prune_spec(model, 0.5)
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # left as it was
    before, after = measure_model(model, image_size=64, repeats=1), measure_model(pruned, image_size=64, repeats=1)
    assert after.params < before.params
    assert after.flops < before.flops
    assert before.flops == count_macs(model, 64)
    assert before.seconds is not None
    assert before.seconds > 0
    rebuilt = zoo.create_model("resnet18", prune_spec=spec)
    assert sum(p.numel() for p in rebuilt.parameters()) == after.params


def test_export_model_goes_through_the_export_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidValueError, match="format"):
        check_export(tmp_path / "m.bin", fmt="tflite")
    assert check_export(tmp_path / "m.pt2", fmt="pt2") == ("pt2", None)
    assert list(tmp_path.iterdir()) == []  # probed, nothing left behind

    def export_file(model: torch.nn.Module, out: str, *, fmt: str, opset: int | None = None) -> tuple[Path, object]:
        Path(out).write_bytes(b"program")  # the seconds of torch.export are not what is tested here
        return Path(out), program

    program = object()
    monkeypatch.setattr(export, "export_file", export_file)
    monkeypatch.setattr(export, "input_dims", lambda program: [("batch", 1, None), ("channels", 3, 3)])
    exported = export_model(zoo.create_model("resnet18"), tmp_path / "m.pt2", fmt="pt2")
    assert exported.path == tmp_path / "m.pt2"
    assert exported.program is program
    assert exported.inputs == (("batch", 1, None), ("channels", 3, 3))


def test_fetch_weights_goes_through_the_zoos_loader(tmp_path: Path) -> None:
    fetched: list[DefaultCfg] = []

    class Mirror(StateDictLoader):
        def fetch(self, cfg: DefaultCfg, *, progress: bool | None = None) -> Path:
            fetched.append(cfg)
            return tmp_path / "weights.safetensors"

    app = ModelZoo(weight_loader=Mirror({}))
    assert fetch_weights("resnet18.a1_in1k", zoo=app) == tmp_path / "weights.safetensors"
    assert fetched == [zoo.get_default_cfg("resnet18.a1_in1k")]
    with pytest.raises(FeatureNotAvailableError, match=r"StateDictLoader\) has no fetch"):
        fetch_weights("resnet18.a1_in1k", zoo=ModelZoo(weight_loader=StateDictLoader({})))


def test_cache_contents_and_clear_cache(tmp_path: Path) -> None:
    checkpoint = tmp_path / "net.safetensors"
    save_file({"w": torch.zeros(4)}, str(checkpoint))
    cache = tmp_path / "cache"
    assert cache_contents(cache_dir=cache).entries == ()
    weight_loader(cache_dir=cache, progress=False).fetch(DefaultCfg(url=checkpoint.as_uri()))
    contents = cache_contents(cache_dir=cache)
    (entry,) = contents.entries
    assert entry.path.name == "net.safetensors"
    assert contents.size == entry.size == checkpoint.stat().st_size
    assert contents.root == cache
    foreign = cache / "notes.txt"
    foreign.write_text("mine")
    cleared = clear_cache(cache_dir=cache)
    assert (cleared.files, cleared.size, cleared.root) == (1, entry.size, cache)
    assert cache_files(cache) == [foreign]  # zoo's own files only
