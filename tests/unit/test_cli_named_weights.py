"""zoo export and zoo prune build the model with the weights its name names (NAME.TAG from the hub, a saved
model's own, --checkpoint), and say on stderr whenever the weights are random instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from weights_support import CheckpointServer, safetensors_bytes
from zoo.archs.base import ZooModule
from zoo.cli import main
from zoo.domain.prune import PruneSpec
from zoo.services import export
from zoo.services.pruner import ChannelPruner


@pytest.fixture(scope="module")
def trained() -> ZooModule:
    """resnet18 with weights no seed of random init gives: what a published or saved set stands in for."""
    torch.manual_seed(11)
    model = zoo.create_model("resnet18")
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.5)
    return model.eval()


@pytest.fixture(scope="module")
def saved(trained: ZooModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.save_pretrained(trained, tmp_path_factory.mktemp("saved") / "r18")


@pytest.fixture
def hub(server: CheckpointServer, cache_dir: Path, trained: ZooModule) -> CheckpointServer:
    """The loopback hub serving `trained` as resnet18.a1_in1k's published weights."""
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    server.add_repo("timm/resnet18.a1_in1k", {"model.safetensors": safetensors_bytes(state)})
    return server


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> list[nn.Module]:
    """The models `zoo export` hands to the exporter; the export itself (seconds of torch.export) is skipped."""
    models: list[nn.Module] = []

    def export_file(model: nn.Module, out: str, *, fmt: str, opset: int | None = None) -> tuple[Path, object]:
        models.append(model)
        path = Path(out)
        path.write_bytes(b"program")
        return path, None

    monkeypatch.setattr(export, "export_file", export_file)
    monkeypatch.setattr(export, "input_dims", lambda program: [])
    return models


@pytest.fixture
def derived(monkeypatch: pytest.MonkeyPatch) -> list[nn.Module]:
    """The models `zoo prune` derives its spec from (their weights choose the channels kept)."""
    models: list[nn.Module] = []
    derive = ChannelPruner.derive

    def recorded(self: ChannelPruner, model: nn.Module, ratio: float) -> tuple[PruneSpec, nn.Module]:
        models.append(model)
        return derive(self, model, ratio)

    monkeypatch.setattr(ChannelPruner, "derive", recorded)
    return models


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_export_of_a_tag_has_its_published_weights(
    hub: CheckpointServer,
    trained: ZooModule,
    exported: list[nn.Module],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "r18.pt2"
    assert main(["export", "resnet18.a1_in1k", "--format", "pt2", "--out", str(out)]) == 0
    (model,) = exported
    assert same_weights(model, trained)
    captured = capsys.readouterr()
    assert "  weights   resnet18.a1_in1k's weights\n" in captured.out
    assert captured.err == ""


def test_export_of_a_saved_model_has_its_weights(
    saved: Path, trained: ZooModule, exported: list[nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["export", f"local-dir:{saved}", "--format", "pt2", "--out", str(tmp_path / "r18.pt2"), "--features"]
    assert main(argv) == 0
    (extractor,) = exported
    layers = dict(trained.named_parameters())
    assert all(torch.equal(p, layers[k.removeprefix("model.")]) for k, p in extractor.named_parameters())
    assert capsys.readouterr().err == ""


def test_random_weights_are_said(exported: list[nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "r18.pt2")
    assert main(["export", "resnet18", "--format", "pt2", "--out", out]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "zoo: warning: resnet18 has RANDOM weights: a bare name names an architecture; name its weights "
        "(NAME.TAG, see `zoo list resnet18 --tags`) or pass --checkpoint\n"
    )
    assert "  weights   random (untrained)\n" in captured.out


def test_weights_that_cannot_be_had_are_replaced_by_random_ones_and_said(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # nothing cached: the tag's weights cannot be had
    spec = tmp_path / "spec.txt"
    assert main(["prune", "resnet18.a1_in1k", "--ratio", "0.5", "--out", str(spec), "--image-size", "32"]) == 0
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("zoo: warning: resnet18.a1_in1k's weights are not available, so its weights are RANDOM: ")
    assert "ZOO_OFFLINE=1" in line
    assert "  weights: random (the named weights are not available)\n" in captured.out
    assert spec.is_file()


def test_prune_derives_from_the_named_weights_or_the_checkpoint(
    hub: CheckpointServer,
    saved: Path,
    trained: ZooModule,
    derived: list[nn.Module],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = str(tmp_path / "spec.txt")
    common = ["--ratio", "0.5", "--out", spec, "--image-size", "32"]
    assert main(["prune", "resnet18.a1_in1k", *common]) == 0
    checkpoint = str(saved / "model.safetensors")
    assert main(["prune", "resnet18", "--checkpoint", checkpoint, *common]) == 0
    assert len(derived) == 2
    assert all(same_weights(model, trained) for model in derived)
    captured = capsys.readouterr()
    assert "  weights: resnet18.a1_in1k's weights\n" in captured.out
    assert f"  weights: checkpoint {checkpoint}\n" in captured.out
    assert captured.err == ""
