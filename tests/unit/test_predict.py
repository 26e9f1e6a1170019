"""Prediction: zoo.data.predict.classify, `zoo predict`, `zoo info --json` and the demo's predict section."""

from __future__ import annotations

import json
import math
import re
import socket
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

import zoo
from modelcache import built
from zoo import api, cli
from zoo.api import ModelZoo
from zoo.archs.resnet import ResNet
from zoo.cli import main
from zoo.data import create_transform, resolve_data_config
from zoo.data.predict import classify, load_image
from zoo.data.sample import draw_beach
from zoo.domain.errors import InvalidValueError
from zoo.domain.values import BuildRequest, DefaultCfg, ModelSpec
from zoo.services.builder import Builder, Built
from zoo.services.weights import StateDictLoader

# a classifier whose logits are its bias (zero weights): the ranking and probabilities are known up front
BIAS = {281: 5.0, 282: 4.0, 7: 3.0}


def softmax_of_bias(classes: int) -> dict[int, float]:
    total = sum(math.exp(b) for b in BIAS.values()) + (classes - len(BIAS))  # exp(0) for every other class
    return {i: math.exp(b) / total for i, b in BIAS.items()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """resnet18 checkpoints whose classifier answers BIAS whatever the image: 1000 classes, and 10."""
    root = tmp_path_factory.mktemp("ckpt")
    state = {k: v.detach().clone().contiguous() for k, v in built("resnet18").state_dict().items()}
    state["fc.weight"].zero_()
    state["fc.bias"].zero_()
    for i, b in BIAS.items():
        state["fc.bias"][i] = b
    save_file(state, str(root / "in1k.safetensors"))
    ten = dict(state, **{"fc.weight": torch.zeros(10, 512), "fc.bias": torch.arange(10, dtype=torch.float32)})
    save_file(ten, str(root / "ten.safetensors"))
    return {"in1k": root / "in1k.safetensors", "ten": root / "ten.safetensors"}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "beach.png"
    draw_beach().save(path)
    return path


# --- classify ------------------------------------------------------------------------------------------------------


class Recorder(nn.Module):
    """A fake classifier with its own cfg, keeping the batch it was given; logits are the channel means."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 3
        self.pretrained_cfg = DefaultCfg(
            input_size=(3, 24, 40), crop_pct=0.8, interpolation="bilinear", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4)
        )
        self.seen: list[torch.Tensor] = []
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return x.mean(dim=(2, 3)) * self.scale


def test_classify_uses_the_models_own_preprocessing() -> None:
    model = Recorder().train()
    images = [draw_beach(), draw_beach(90, 60), Image.new("RGB", (50, 70), (10, 200, 30))]
    results = classify(model, images, top_k=2, batch_size=2)
    expected = torch.stack([create_transform(resolve_data_config(model.pretrained_cfg))(img) for img in images])
    assert torch.equal(torch.cat(model.seen), expected)
    assert [len(b) for b in model.seen] == [2, 1]  # batches of batch_size
    assert model.training  # left in the mode it was in
    for preds, x in zip(results, expected, strict=True):
        probs = x.mean(dim=(1, 2)).softmax(0)
        assert [p.index for p in preds] == probs.argsort(descending=True)[:2].tolist()
        assert [p.probability for p in preds] == pytest.approx(probs.sort(descending=True).values[:2].tolist())
        assert all(p.label is None and p.synset is None for p in preds)  # 3 classes: not ImageNet-1k


def test_classify_refuses_bad_requests(r18: ResNet) -> None:
    with pytest.raises(InvalidValueError, match=r"top_k=1001 is invalid: expected an int in \[1, 1000\]"):
        classify(r18, [draw_beach()], top_k=1001)
    with pytest.raises(InvalidValueError, match="has no classifier"):
        classify(zoo.create_model("resnet18", num_classes=0), [draw_beach()])


def test_load_image_errors_name_the_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    draw_beach().save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:400])
    for path, reason in [
        (tmp_path / "missing.jpg", "No such file"),
        (tmp_path, "Is a directory"),
        (text, "cannot identify image file"),
        (truncated, ""),
    ]:
        with pytest.raises(InvalidValueError, match=re.escape(f"image {str(path)!r} cannot be read: {reason}")):
            load_image(path)
    grey = tmp_path / "grey.png"
    Image.new("L", (8, 8), 100).save(grey)
    assert load_image(grey).mode == "RGB"
    assert load_image(grey, channels=1).mode == "L"


def test_load_image_warns_about_what_conversion_drops(tmp_path: Path) -> None:
    rgba, deep, rgb = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(rgba)
    Image.new("I;16", (8, 8), 1000).save(deep)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(rgb)
    with pytest.warns(UserWarning, match=r"a\.png' has an alpha channel \(RGBA\)"):
        assert load_image(rgba).getpixel((0, 0)) == (10, 20, 30)
    with pytest.warns(UserWarning, match=r"b\.png' has I;16 pixels .* clips values above 255"):
        load_image(deep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(rgb)  # nothing lost, nothing said


# --- zoo predict ---------------------------------------------------------------------------------------------------


def test_predict_text(image: Path, checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", str(image), str(image), "--model", "resnet18.tv_in1k", "--checkpoint", str(checkpoints["in1k"])]
    assert main([*argv, "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("resnet18.tv_in1k (checkpoint ")
    assert "224x224, bilinear, crop_pct 0.875 (center)" in out[0]  # the tag's own preprocessing
    p = softmax_of_bias(1000)
    per_image = [
        str(image),
        f"   1. {p[281] * 100:6.2f}%  tabby  (281, n02123045)",
        f"   2. {p[282] * 100:6.2f}%  tiger cat  (282, n02123159)",
    ]
    assert out[1:] == per_image * 2


def test_predict_json(image: Path, checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(image), "--model", "resnet18", "--checkpoint", str(checkpoints["ten"]), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == "resnet18.a1_in1k"
    assert record["weights"] == {"source": "checkpoint", "checkpoint": str(checkpoints["ten"])}
    assert record["data_config"] == resolve_data_config("resnet18").to_dict()
    assert record["labels"] is None  # 10 classes: not ImageNet-1k
    (entry,) = record["images"]
    assert entry["path"] == str(image)
    probs = torch.arange(10, dtype=torch.float64).softmax(0)  # the ten-class head's logits are its bias 0..9
    assert [p["index"] for p in entry["predictions"]] == [9, 8, 7, 6, 5]
    assert [p["probability"] for p in entry["predictions"]] == pytest.approx(probs[[9, 8, 7, 6, 5]].tolist())
    assert {p["label"] for p in entry["predictions"]} == {None}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "--model", "resnet18"], "image '{missing}' cannot be read: No such file or directory"),
        (["{image}", "--model", "resnt18"], "unknown model 'resnt18'; did you mean 'resnet18'"),
        (["{image}", "--model", "resnet18", "--top-k", "0"], "--top-k=0 is invalid: expected an int >= 1"),
        (
            ["{image}", "--model", "resnet18", "--checkpoint", "{in1k}", "--top-k", "1001"],
            r"--top-k=1001 is invalid: expected an int in [1, 1000]",
        ),
        (["{image}", "--model", "resnet18", "--checkpoint", "{missing}"], "{missing}"),
    ],
)
def test_predict_errors(
    args: list[str],
    message: str,
    image: Path,
    checkpoints: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {"image": str(image), "in1k": str(checkpoints["in1k"]), "missing": str(tmp_path / "missing.png")}
    assert main(["predict", *(a.format(**names) for a in args)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("zoo: error: ")
    assert message.format(**names) in captured.err


# --- zoo info --json -----------------------------------------------------------------------------------------------


def test_info_json(r18: ResNet, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "resnet18.tv_in1k", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record) == {
        "schema",
        "name",
        "tag",
        "family",
        "parameters",
        "num_classes",
        "num_features",
        "pruned",
        "tags",
        "default_cfg",
        "data_config",
        "feature_info",
        "card",
    }
    assert (record["schema"], record["name"], record["tag"], record["family"]) == (
        1,
        "resnet18",
        "tv_in1k",
        "zoo.archs.resnet",
    )
    assert record["parameters"] == sum(p.numel() for p in r18.parameters())
    assert (record["num_classes"], record["num_features"], record["pruned"]) == (1000, r18.num_features, False)
    assert "tv_in1k" in record["tags"]
    assert record["default_cfg"] == zoo.get_default_cfg("resnet18.tv_in1k").to_dict()
    assert record["data_config"] == resolve_data_config("resnet18.tv_in1k").to_dict()
    assert record["feature_info"] == [
        {"index": t.index, "module": t.module, "num_chs": t.num_chs, "reduction": t.reduction} for t in r18.feature_info
    ]
    assert record["card"] == zoo.model_card("resnet18.tv_in1k").to_dict()


def test_info_json_of_a_pruned_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "ecaresnet50d_pruned", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["pruned"] is True
    assert record["num_features"] == record["feature_info"][-1]["num_chs"]


# --- the demo ------------------------------------------------------------------------------------------------------


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every model a Builder finishes building while the test runs."""
    done: list[str] = []
    build = Builder.build

    def counted(self: Builder, spec: ModelSpec, request: BuildRequest) -> Built:
        model = build(self, spec, request)
        done.append(spec.name)
        return model

    monkeypatch.setattr(Builder, "build", counted)
    return done


class CountingLoader(StateDictLoader):
    """Serves one checkpoint for every cfg, counting the loads."""

    def __init__(self, path: Path) -> None:
        super().__init__(load_file(path))
        self.loads = 0

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> dict[str, torch.Tensor]:
        self.loads += 1
        return super().load_state_dict(cfg, checkpoint_path=checkpoint_path)


def test_demo_predict_builds_the_pretrained_model_once(
    checkpoints: dict[str, Path],
    builds: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loader = CountingLoader(checkpoints["in1k"])  # the "published weights", served with no network
    monkeypatch.setattr(api, "_default", ModelZoo(weight_loader=loader))
    monkeypatch.setattr(cli, "_network_problem", lambda urls, timeout=3.0: None)
    cli._demo_predict()
    out = capsys.readouterr().out
    assert (loader.loads, builds) == (1, ["resnet18"])  # the model that predicts is the one whose weights were probed
    assert "resnet18.a1_in1k's published weights (downloaded" in out
    assert "$ zoo predict beach.png --model resnet18.a1_in1k --top-k 5\n" in out
    assert "resnet18.a1_in1k (pretrained weights); input" in out
    p = softmax_of_bias(1000)
    assert f"   1. {p[281] * 100:6.2f}%  tabby  (281, n02123045)" in out  # the served checkpoint's answer


def test_demo_predict_offline_says_its_weights_are_random(
    cache_dir: Path, builds: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_network_problem", lambda urls, timeout=3.0: "no network in this test")
    cli._demo_predict()
    assert builds == ["resnet18"]  # the random-init model predicts itself: its checkpoint is not loaded back
    out = capsys.readouterr().out
    assert "NOT AVAILABLE (no network in this test)" in out
    assert "RANDOMLY INITIALISED resnet18" in out
    assert "MEANINGLESS" in out
    assert (
        "$ zoo predict beach.png --model resnet18.a1_in1k --top-k 5 --checkpoint resnet18-random-init.safetensors"
        in out
    )
    ranks = re.findall(r"^ +(\d)\. +([0-9.]+)%  .+ \((\d+), n\d{8}\)$", out, flags=re.MULTILINE)
    assert [int(r[0]) for r in ranks] == [1, 2, 3, 4, 5]
    probs = [float(r[1]) for r in ranks]
    assert probs == sorted(probs, reverse=True)


def test_network_problem_probes_fast_and_honours_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ZOO_OFFLINE", "HF_HUB_OFFLINE", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        open_url = f"http://127.0.0.1:{listening.getsockname()[1]}/x"
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            closed_url = f"http://127.0.0.1:{closed.getsockname()[1]}/x"  # bound, not listening: refused
            assert cli._network_problem([closed_url, open_url]) is None
            problem = cli._network_problem([closed_url])
            assert problem is not None
            assert problem.startswith("127.0.0.1: ")
            monkeypatch.setenv("ZOO_OFFLINE", "1")
            assert cli._network_problem([open_url]) == "ZOO_OFFLINE is set"
