"""zoo predict over folders and batches with bad files, its top-k on small heads, saved models (local-dir:,
hf-hub:) in predict and info with their label_names; and classify/load_image refusing the wrong container."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

import zoo
from weights_support import CheckpointServer
from zoo.archs.base import ZooModule
from zoo.cli import main
from zoo.data.predict import classify, load_image
from zoo.domain.errors import InvalidValueError

LABELS = ["cat", "dog", "bird"]
BIAS = (1.0, 3.0, 2.0)  # the head's logits whatever the image: dog, then bird, then cat


def probability(i: int) -> float:
    return math.exp(BIAS[i]) / sum(math.exp(b) for b in BIAS)


@pytest.fixture(scope="module")
def three_class() -> ZooModule:
    """resnet18 with a 3-class head whose logits are BIAS for every image."""
    torch.manual_seed(0)
    model = zoo.create_model("resnet18", num_classes=3)
    head = model.get_classifier()
    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor(BIAS))
    return model.eval()


@pytest.fixture(scope="module")
def saved(three_class: ZooModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """three_class saved with its label_names (config.json + model.safetensors)."""
    return zoo.save_pretrained(three_class, tmp_path_factory.mktemp("saved") / "pets", label_names=LABELS)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two images, with a text file, a hidden image and a subfolder beside them (none classified)."""
    folder = tmp_path_factory.mktemp("pictures")
    Image.new("RGB", (40, 30), (200, 120, 40)).save(folder / "b.jpg")
    Image.new("RGB", (30, 40), (20, 120, 240)).save(folder / "a.png")
    Image.new("RGB", (8, 8)).save(folder / ".hidden.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "sub" / "c.png")
    return folder


def ranked(path: str, top: int = 3, *, labels: bool = True) -> list[str]:
    """What predict prints for one image of the three-class model: its path, then its classes by probability."""
    lines = [path]
    for rank, i in enumerate((1, 2, 0)[:top], 1):
        label = f"{LABELS[i]}  ({i})" if labels else f"class {i}"
        lines.append(f"  {rank:>2}. {probability(i) * 100:6.2f}%  {label}")
    return lines


# -- 5: saved models by name in predict and info, their label_names printed ---------------------------------------


def test_predict_a_saved_model_names_its_classes_and_caps_the_default_top_k(
    saved: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(pictures / "a.png")
    assert main(["predict", image, "--model", f"local-dir:{saved}"]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0].startswith(f"local-dir:{saved} (pretrained weights); input 224x224")
    assert out[1:] == ranked(image)  # the default top-5, capped at the model's 3 classes
    assert captured.err == ""


def test_predict_optimised_ranks_as_the_model_does(
    saved: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(pictures / "a.png")
    assert main(["predict", image, "--model", f"local-dir:{saved}", "--optimize", "--json"]) == 0
    captured = capsys.readouterr()
    (entry,) = json.loads(captured.out)["images"]
    assert [p["index"] for p in entry["predictions"]] == [1, 2, 0]
    assert "zoo: note: optimised: " in captured.err


def test_predict_json_of_a_saved_model(saved: Path, pictures: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(pictures / "a.png")
    assert main(["predict", image, "--model", f"local-dir:{saved}", "--json", "--top-k", "2"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == f"local-dir:{saved}"
    assert record["labels"] == "saved"
    (entry,) = record["images"]
    assert [(p["index"], p["label"], p["synset"]) for p in entry["predictions"]] == [
        (1, "dog", None),
        (2, "bird", None),
    ]


def test_predict_and_info_read_a_hub_repo(
    saved: Path, pictures: Path, server: CheckpointServer, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add_repo("me/pets", {p.name: p.read_bytes() for p in saved.iterdir()})
    assert main(["info", "hf-hub:me/pets", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["name"], record["num_classes"], record["tags"]) == ("resnet18", 3, [])
    assert record["default_cfg"]["hf_hub_id"] == "me/pets"
    assert server.count("/me/pets/resolve/main/model.safetensors") == 0  # info reads config.json only
    image = str(pictures / "b.jpg")
    assert main(["predict", image, "--model", "hf-hub:me/pets", "--top-k", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ranked(image, 1)


def test_info_of_a_saved_model(saved: Path, three_class: ZooModule, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", f"local-dir:{saved}", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["name"], record["tag"], record["family"]) == ("resnet18", "", "zoo.archs.resnet")
    assert record["parameters"] == sum(p.numel() for p in three_class.parameters())
    assert (record["num_classes"], record["tags"]) == (3, [])  # its own weights, none of resnet18's published sets
    assert record["default_cfg"]["file"] == str(saved / "model.safetensors")
    assert main(["info", f"local-dir:{saved}"]) == 0
    out = capsys.readouterr().out
    assert f"name:        resnet18 (saved: local-dir:{saved})" in out
    assert "default cfg (saved):" in out


# -- 4: top-k on a small head, folders, one bad file in a batch ---------------------------------------------------


def test_default_top_k_fits_a_three_class_checkpoint(
    saved: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(pictures / "a.png")
    weights = str(saved / "model.safetensors")
    assert main(["predict", image, "--model", "resnet18", "--checkpoint", weights]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ranked(image, labels=False)
    assert main(["predict", image, "--model", "resnet18", "--checkpoint", weights, "--top-k", "4"]) == 2
    assert capsys.readouterr().err == "zoo: error: --top-k=4 is invalid: expected an int in [1, 3]\n"


def test_predict_a_folder_classifies_each_image_in_it(
    saved: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(pictures), "--model", f"local-dir:{saved}", "--top-k", "1"]) == 0
    captured = capsys.readouterr()
    # sorted; the text file, the hidden file and the subfolder's image are not among them
    assert captured.out.splitlines()[1:] == ranked(str(pictures / "a.png"), 1) + ranked(str(pictures / "b.jpg"), 1)
    assert captured.err == ""


def test_one_bad_file_is_reported_and_the_others_are_classified(
    saved: Path, pictures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing, text, empty = tmp_path / "missing.png", tmp_path / "notes.png", tmp_path / "empty"
    text.write_text("not an image")
    empty.mkdir()
    good = [str(pictures / "a.png"), str(pictures / "b.jpg")]
    argv = [good[0], str(missing), str(text), str(empty), good[1], "--model", f"local-dir:{saved}", "--top-k", "1"]
    assert main(["predict", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1:] == ranked(good[0], 1) + ranked(good[1], 1)
    assert captured.err.splitlines() == [
        f"zoo: error: folder {str(empty)!r} holds no image file (.jpg, .png, .webp, ...: the kinds Pillow reads)",
        f"zoo: error: image {str(missing)!r} cannot be read: No such file or directory",
        f"zoo: error: image {str(text)!r} cannot be read: cannot identify image file {str(text)!r}",
    ]
    assert main(["predict", *argv, "--json"]) == 2
    record = json.loads(capsys.readouterr().out)
    assert [e["path"] for e in record["images"]] == [*good, str(empty), str(missing), str(text)]
    assert [("predictions" in e, "error" in e) for e in record["images"]] == [(True, False)] * 2 + [(False, True)] * 3


def test_a_warning_while_reading_is_one_line(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rgba = tmp_path / "clear.png"
    Image.new("RGBA", (16, 16), (10, 20, 30, 0)).save(rgba)
    assert main(["predict", str(rgba), "--model", f"local-dir:{saved}", "--top-k", "1"]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"zoo: warning: image {str(rgba)!r} has an alpha channel (RGBA); it is dropped")


# -- 9: classify and load_image refuse a str or None where a list or a path belongs -------------------------------


def test_classify_refuses_what_is_not_a_list_of_images(three_class: ZooModule, pictures: Path) -> None:
    path = str(pictures / "a.png")
    for images, shown in [
        (path, f"images={path!r}"),
        (None, "images=None"),
        (42, "images=42"),
        ([path], f"images[0]={path!r}"),
        ([load_image(path), None], "images[1]=None"),
    ]:
        with pytest.raises(InvalidValueError, match=r"^" + shown.replace("[", r"\[").replace("]", r"\]")) as e:
            classify(three_class, images)  # type: ignore[arg-type]  # the wrong types are the point
        assert "expected a list of PIL images or image tensors (read files with load_image)" in str(e.value)
    with pytest.raises(InvalidValueError, match=r"^model=None is invalid: expected a classifier"):
        classify(None, [load_image(path)])  # type: ignore[arg-type]  # the wrong type is the point


def test_load_image_refuses_what_is_not_one_path(pictures: Path) -> None:
    path = str(pictures / "a.png")
    for value in (None, [path], 3, b"a.png"):
        with pytest.raises(InvalidValueError, match=r"^path=.* is invalid: expected the path of one image file"):
            load_image(value)  # type: ignore[arg-type]  # the wrong types are the point
    for channels in ("3", 2, True, None):
        with pytest.raises(InvalidValueError, match=r"channels=.* is invalid: images load with 1 .* or 3"):
            load_image(path, channels=channels)  # type: ignore[arg-type]  # the wrong types are the point
