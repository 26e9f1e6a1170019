"""save_pretrained and saved models under failure: both files or neither, user files kept, every mistake named."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import zoo
from weights_support import TINY_CFG, TinyNet, assert_same, tiny_checkpoint
from zoo.api import ModelZoo
from zoo.archs.base import ZooModule
from zoo.domain.errors import InvalidValueError, SavedModelError
from zoo.domain.values import BuildRecord, ModelSpec
from zoo.services.registry import Registry
from zoo.services.weights import CachedWeightLoader


def tiny_zoo() -> ModelZoo:
    reg = Registry()
    reg.register(ModelSpec(name="tiny_net", family="tests.tiny", constructor=TinyNet, default_cfgs=(TINY_CFG,)))
    return ModelZoo(registry=reg, weight_loader=CachedWeightLoader(progress=False))


def tiny(seed: int) -> ZooModule:
    model = tiny_zoo().create_model("tiny_net")
    model.load_state_dict(tiny_checkpoint(seed))
    return model


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- 2. a save that fails leaves the saved model it was replacing --------------------------------


def fail_config_write(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.write_text

    def full_disk(self: Path, *args: object, **kwargs: object) -> int:
        if "config.json" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)  # type: ignore[arg-type]  # forwarded as given

    monkeypatch.setattr(Path, "write_text", full_disk)


def fail_config_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.replace

    def refused(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == "config.json":
            raise OSError(errno.EIO, "Input/output error", str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", refused)


@pytest.mark.parametrize("fail", [fail_config_write, fail_config_rename], ids=["disk-full", "rename-fails"])
def test_a_failed_save_keeps_the_old_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: Callable[[pytest.MonkeyPatch], None]
) -> None:
    app = tiny_zoo()
    out = tmp_path / "saved"
    app.save_pretrained(tiny(1), out)
    before = files(out)
    fail(monkeypatch)
    with pytest.raises(SavedModelError) as e:
        app.save_pretrained(tiny(2), out)
    monkeypatch.undo()
    assert files(out) == before  # the old pair, and no temp file beside it
    assert "nothing there was changed" in str(e.value)
    assert_same(app.create_model(f"local-dir:{out}", pretrained=True).state_dict(), tiny_checkpoint(1))


def test_a_failed_first_save_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_config_write(monkeypatch)
    with pytest.raises(SavedModelError):
        tiny_zoo().save_pretrained(tiny(1), tmp_path / "new" / "saved")
    assert list(tmp_path.iterdir()) == []


def test_a_config_json_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "saved"
    tiny_zoo().save_pretrained(tiny(1), out)
    (out / "config.json").unlink()
    (out / "config.json").mkdir()
    weights = (out / "model.safetensors").read_bytes()
    with pytest.raises(SavedModelError) as e:
        tiny_zoo().save_pretrained(tiny(2), out)
    assert (out / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert "config.json is not a file" in str(e.value)


# -- 4. what zoo did not write is never overwritten ------------------------------------------------


def test_an_empty_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text('{"app": "mine"}')
    with pytest.raises(InvalidValueError, match=r"directory='' is invalid.*pass '\.'"):
        tiny_zoo().save_pretrained(tiny(1), "")
    assert files(tmp_path) == {"config.json": b'{"app": "mine"}'}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("config.json", b'{"app": "mine", "debug": true}'),
        ("config.json", b'{"architectures": ["BertModel"], "model_type": "bert"}'),  # a transformers config
        ("config.json", b"not json"),
        ("model.safetensors", b"my own weights"),  # weights without a saved model's config
    ],
)
def test_files_zoo_did_not_write_are_not_overwritten(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SavedModelError, match="zoo replaces only a saved model's files"):
        tiny_zoo().save_pretrained(tiny(1), tmp_path)
    assert files(tmp_path) == {name: content}


def test_a_saved_models_config_may_be_replaced_not_one_without_an_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"pretrained_cfg": {}}))
    with pytest.raises(SavedModelError, match="not a zoo or timm model config"):
        tiny_zoo().save_pretrained(tiny(3), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "tiny_net", "pretrained_cfg": {}}))  # timm's
    (tmp_path / "pytorch_model.bin").write_bytes(b"timm's weights")
    app = tiny_zoo()
    app.save_pretrained(tiny(3), tmp_path)
    assert_same(app.create_model(f"local-dir:{tmp_path}", pretrained=True).state_dict(), tiny_checkpoint(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "pytorch_model.bin"]


# -- 6. arguments of the wrong kind -------------------------------------------------------------


@pytest.mark.parametrize("directory", [123, None, b"/tmp/x"])
def test_a_directory_that_is_not_a_path_is_named(directory: object) -> None:
    with pytest.raises(InvalidValueError, match=rf"directory={directory!r} is invalid: expected the path of a folder"):
        tiny_zoo().save_pretrained(tiny(1), directory)  # type: ignore[arg-type]  # the wrong type is the point


def test_label_names_from_a_generator_are_kept(tmp_path: Path) -> None:
    app = tiny_zoo()
    app.save_pretrained(tiny(1), tmp_path, label_names=(f"class {i}" for i in range(5)))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["label_names"] == [f"class {i}" for i in range(5)]


@pytest.mark.parametrize("label_names", [5, {"a", "b", "c", "d", "e"}])
def test_label_names_that_are_not_names_in_order_are_named(tmp_path: Path, label_names: object) -> None:
    with pytest.raises(InvalidValueError, match=r"label_names.* is invalid"):
        tiny_zoo().save_pretrained(tiny(1), tmp_path, label_names=label_names)  # type: ignore[arg-type]  # the point
    assert list(tmp_path.iterdir()) == []


# -- 7. a config.json nested too deeply ------------------------------------------------------------


def test_a_deeply_nested_config_is_a_saved_model_error(tmp_path: Path) -> None:
    depth = 100_000
    (tmp_path / "config.json").write_text(
        '{"architecture": "resnet18", "model_args": ' + "[" * depth + "]" * depth + "}"
    )
    with pytest.raises(SavedModelError, match="nested too deeply"):
        zoo.create_model(f"local-dir:{tmp_path}")
    with pytest.raises(SavedModelError, match="nested too deeply"):
        zoo.get_default_cfg(f"local-dir:{tmp_path}")


# -- 10. extractors and compiled models ----------------------------------------------------------


def test_a_feature_extractor_is_refused_with_what_to_save_instead(tmp_path: Path) -> None:
    extractor = zoo.create_model("resnet18", features_only=True)
    with pytest.raises(SavedModelError) as e:
        zoo.save_pretrained(extractor, tmp_path)
    assert "feature extractor" in str(e.value)
    assert "save the classifier" in str(e.value)
    assert "is it a zoo model" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_compiled_model_is_saved_as_the_model_it_compiled(tmp_path: Path) -> None:
    app = tiny_zoo()
    compiled = torch.compile(tiny(4))
    assert isinstance(compiled, nn.Module)  # torch's stubs type it as a callable
    app.save_pretrained(compiled, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "tiny_net"
    assert_same(app.create_model(f"local-dir:{tmp_path}", pretrained=True).state_dict(), tiny_checkpoint(4))


# -- 11. numpy integers as model keywords ---------------------------------------------------------


def test_numpy_integer_keywords_are_saved_as_ints(tmp_path: Path) -> None:
    model = zoo.create_model("vit_tiny_patch16_224", img_size=np.int64(64))
    zoo.save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_args"]["img_size"] == 64
    back = zoo.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert_same(back.state_dict(), model.state_dict())


def test_a_build_record_keeps_plain_numbers() -> None:
    record = BuildRecord(architecture="vit", model_args={"img_size": np.int64(64), "sizes": [np.int32(1), 2.5]})
    assert type(record.model_args["img_size"]) is int
    sizes = record.model_args["sizes"]
    assert isinstance(sizes, list)  # a list, as given
    assert sizes == [1, 2.5]
    assert type(sizes[0]) is int
