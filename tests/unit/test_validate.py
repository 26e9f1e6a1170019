"""zoo validate (issue 26): accuracy on a generated image folder whose expected accuracy is known by
construction, the class mappings (sorted folders, ImageNet synsets) and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import zoo
from zoo.cli import main
from zoo.data import imagenet_classes
from zoo.domain.errors import DatasetError, DeviceUnavailableError
from zoo.domain.values import DefaultCfg
from zoo.validate import class_indices, validate_model

COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))  # a solid image's largest normalised channel is its colour's


class ColourNet(nn.Module):
    """Class c scores the mean of channel c: a solid red/green/blue image is class 0/1/2, whatever its size."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.default_cfg = DefaultCfg(input_size=(3, 24, 24), num_classes=3, crop_pct=1.0)
        self.head = nn.Linear(3, 3)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(3))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(x.mean(dim=(2, 3)))
        return logits


def _write(folder: Path, images: dict[str, list[tuple[int, int, int]]]) -> None:
    for name, colours in images.items():
        (folder / name).mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (40, 30), colour).save(folder / name / f"{i}.png")


def test_validation_counts_what_the_model_gets_right(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    red, green, blue = COLOURS
    # folder i (sorted) is class i; an image is right when its colour is its folder's
    images = {"0_red": [red, red, green], "1_green": [green, blue, green, green], "2_blue": [red, blue]}
    _write(tmp_path, images)
    right = {name: sum(COLOURS.index(c) == i for c in cs) for i, (name, cs) in enumerate(sorted(images.items()))}
    total = sum(map(len, images.values()))
    result = validate_model(ColourNet(), str(tmp_path), batch_size=4, workers=0, device="cpu")
    assert result.mapping == "sorted-folders"
    assert result.images == total
    assert result.top1 == pytest.approx(100 * sum(right.values()) / total)
    assert (result.top_k, result.top5) == (3, 100.0)  # three classes: every one is in the top 3
    assert [(c.folder, c.index, c.images) for c in result.per_class] == [
        (name, i, len(cs)) for i, (name, cs) in enumerate(sorted(images.items()))
    ]
    assert [c.top1 for c in result.per_class] == [
        pytest.approx(100 * right[c.folder] / c.images) for c in result.per_class
    ]
    assert result.images_per_sec > 0
    assert capsys.readouterr().err == ""  # no bar where stderr is not a terminal
    validate_model(ColourNet(), str(tmp_path), batch_size=4, workers=0, device="cpu", progress=True)
    assert "validate: 100%" in capsys.readouterr().err  # a tqdm bar, when asked (a terminal asks)
    limited = validate_model(ColourNet(), str(tmp_path), batch_size=2, workers=1, device="cpu", limit=3)
    assert limited.images == 3
    assert limited.top1 == pytest.approx(100 * 2 / 3)  # the first folder's three images


def test_class_mappings_and_their_errors() -> None:
    synsets = [c.synset for c in imagenet_classes()]
    assert class_indices([synsets[5], synsets[2]], 1000) == ([5, 2], "imagenet-synsets")
    assert class_indices(["cat", "dog"], 2, ["dog", "cat"]) == ([1, 0], "label_names")
    assert class_indices(["cat", "dog"], 2) == ([0, 1], "sorted-folders")
    with pytest.raises(
        DatasetError, match=r"\['cat'\] are not ImageNet-1k synset ids.*2 class folders for a head of 1000"
    ):
        class_indices(["cat", synsets[0]], 1000)
    with pytest.raises(DatasetError, match="the model has 10 classes, not 1000"):
        class_indices([synsets[0]], 10)


def test_folders_that_cannot_be_validated_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="is not a folder"):
        validate_model(ColourNet(), str(tmp_path / "missing"), workers=0, device="cpu")
    with pytest.raises(DatasetError, match="no class folders"):
        validate_model(ColourNet(), str(tmp_path), workers=0, device="cpu")
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        validate_model(ColourNet(), str(tmp_path), workers=0, device="cpu")


def test_zoo_validate_maps_synset_folders_to_imagenet_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint whose classifier ignores the image: its ranking is its bias, so the accuracy is known."""
    model = zoo.create_model("test_resnet")
    ranking = [1, 2, 3, 4, 5]  # class 1 first, class 0 outside the top 5
    head = model.get_classifier()
    assert isinstance(head, nn.Linear)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for place, index in enumerate(ranking):
            head.bias[index] = 10.0 - place
    save_file(model.state_dict(), str(tmp_path / "fixed.safetensors"))
    synsets = [c.synset for c in imagenet_classes()]
    counts = {synsets[1]: 3, synsets[2]: 2, synsets[0]: 1}
    _write(tmp_path / "data", {s: [COLOURS[0]] * n for s, n in counts.items()})
    argv = [
        "validate",
        str(tmp_path / "data"),
        "--model",
        "test_resnet",
        "--checkpoint",
        str(tmp_path / "fixed.safetensors"),
    ]
    assert main([*argv, "--workers", "0", "--batch-size", "4", "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    total = sum(counts.values())
    assert record["mapping"] == "imagenet-synsets"
    assert record["top1"] == pytest.approx(100 * counts[synsets[1]] / total)
    assert record["top5"] == pytest.approx(100 * (counts[synsets[1]] + counts[synsets[2]]) / total)
    assert {c["folder"]: (c["index"], c["top1"], c["top5"]) for c in record["per_class"]} == {
        synsets[0]: (0, 0.0, 0.0),
        synsets[1]: (1, 100.0, 100.0),
        synsets[2]: (2, 0.0, 100.0),
    }
    assert main([*argv, "--workers", "0", "--device", "cpu"]) == 0
    assert f"top-1 {100 * 3 / 6:.3f}%  top-5 {100 * 5 / 6:.3f}%" in capsys.readouterr().out
    # the optimised copy ranks by the same bias (a bfloat16 or float32 copy keeps 10 > 9 > ... apart)
    assert main([*argv, "--workers", "0", "--device", "cpu", "--optimize", "--json"]) == 0
    captured = capsys.readouterr()
    optimised = json.loads(captured.out)
    assert (optimised["top1"], optimised["top5"]) == (record["top1"], record["top5"])
    assert "zoo: note: optimised: " in captured.err
    assert main([*argv, "--workers", "0", "--device", "cpu", "--optimize", "--amp", "bf16"]) == 2
    assert "--optimize with --amp is invalid" in capsys.readouterr().err
    assert main([*argv, "--device", "cuda:7"] if not torch.cuda.is_available() else [*argv, "--device", "nope"]) == 2
    assert "device=" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "nothing"), "--model", "test_resnet"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_an_absent_device_is_a_zoo_error() -> None:
    from zoo.devices import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceUnavailableError, match=r"'tpu9'.*available"):
        resolve_device("tpu9")
    with pytest.raises(DeviceUnavailableError, match="cuda:99"):
        resolve_device("cuda:99")


def test_zoo_validate_maps_folders_by_a_saved_models_label_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """label_names in another order than the sorted folders: only the label mapping makes "fox" class 0."""
    model = zoo.create_model("test_resnet", num_classes=3)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0, 1.0, 0.0]))  # every image: class 0 first, then 1
    zoo.save_pretrained(model, tmp_path / "saved", label_names=["fox", "cat", "dog"])
    _write(tmp_path / "data", {"cat": [COLOURS[1]] * 2, "dog": [COLOURS[2]], "fox": [COLOURS[0]] * 3})
    argv = ["validate", str(tmp_path / "data"), "--model", f"local-dir:{tmp_path / 'saved'}", "--workers", "0"]
    assert main([*argv, "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["mapping"] == "label_names"
    assert record["top1"] == pytest.approx(100 * 3 / 6)  # the fox images
    assert record["top_k"] == 3
    assert {c["folder"]: c["index"] for c in record["per_class"]} == {"fox": 0, "cat": 1, "dog": 2}


def test_an_unreadable_image_is_left_out_and_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    red, green, blue = COLOURS
    _write(tmp_path, {"0_red": [red, green], "1_green": [green], "2_blue": [blue]})
    (tmp_path / "1_green" / "broken.png").write_bytes(b"not a picture")
    for workers in (0, 1):  # in a worker process too: the bad file is not an exception crossing processes
        result = validate_model(ColourNet(), str(tmp_path), batch_size=2, workers=workers, device="cpu")
        assert result.images == 4
        assert result.top1 == pytest.approx(100 * 3 / 4)  # all but the green image in 0_red
        assert len(result.unreadable) == 1
        assert "broken.png" in result.unreadable[0]
    for path in tmp_path.glob("*/*.png"):
        path.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"no image of .* could be read"):
        validate_model(ColourNet(), str(tmp_path), workers=0, device="cpu")
