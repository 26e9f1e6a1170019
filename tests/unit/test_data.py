"""zoo.data: DataConfig resolution and overrides, the eval and training pipelines, ImageNet-1k labels."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import zoo
from zoo.archs.resnet import ResNet
from zoo.data import DataConfig, create_transform, imagenet_classes, resolve_data_config
from zoo.data.transforms import eval_resize_size
from zoo.domain.errors import FeatureNotAvailableError, InvalidArgumentError, InvalidValueError, ZooError
from zoo.domain.values import DefaultCfg

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def cfg(**fields: object) -> DataConfig:
    """A DataConfig with ImageNet statistics and the given fields over a 224 / 0.875 / bicubic / center base."""
    base: dict[str, object] = {
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "mean": MEAN,
        "std": STD,
        "crop_pct": 0.875,
        "crop_mode": "center",
    }
    return DataConfig(**{**base, **fields})


def solid(width: int, height: int, colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def normalised(colour: tuple[int, ...], mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> torch.Tensor:
    """(colour / 255 - mean) / std per channel, as a (C,) tensor: the value a solid image normalises to."""
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, mean, std, strict=True)])


def coordinates(width: int, height: int) -> Image.Image:
    """An image whose red channel is x mod 256 and green channel y mod 256, to read crop offsets back."""
    x = torch.arange(width).remainder(256).expand(height, width)
    y = torch.arange(height).remainder(256).unsqueeze(1).expand(height, width)
    return Image.fromarray(torch.stack([x, y, torch.zeros_like(x)], dim=-1).to(torch.uint8).numpy(), "RGB")


# --- resolve_data_config -------------------------------------------------------------------------------------------


def test_resolve_from_name_model_and_cfg_agree(r18: ResNet) -> None:
    tagged = zoo.get_default_cfg("resnet18.tv_in1k")
    data = resolve_data_config("resnet18.tv_in1k")
    assert data == resolve_data_config(tagged)
    assert (data.input_size, data.interpolation, data.crop_pct, data.crop_mode) == (
        tagged.input_size,
        tagged.interpolation,
        tagged.crop_pct,
        tagged.crop_mode,
    )
    assert (data.mean, data.std) == (tagged.mean, tagged.std)
    # a model carries the cfg it was built with
    assert resolve_data_config(r18) == resolve_data_config(r18.pretrained_cfg) == resolve_data_config("resnet18")


def test_use_test_size_takes_the_test_fields() -> None:
    base = zoo.get_default_cfg("resnet18.a1_in1k")
    assert base.test_input_size is not None
    assert base.test_crop_pct is not None
    data = resolve_data_config(base, use_test_size=True)
    assert data.input_size == base.test_input_size
    assert data.crop_pct == base.test_crop_pct
    plain = DefaultCfg()  # no test fields: the train ones stay
    assert resolve_data_config(plain, use_test_size=True) == resolve_data_config(plain)


def test_dict_cfg_with_missing_and_extra_keys() -> None:
    # a timm-style dict: fields it leaves out take the defaults, keys that are not data fields are ignored
    data = resolve_data_config({"input_size": [3, 160, 192], "crop_pct": 0.95, "architecture": "x", "mean": None})
    assert data.input_size == (3, 160, 192)
    assert data.crop_pct == 0.95
    assert (data.mean, data.std, data.interpolation, data.crop_mode) == (MEAN, STD, "bicubic", "center")


def test_a_model_built_with_one_channel_resolves_one_channel(r18: ResNet) -> None:
    grey = zoo.create_model("resnet18", in_chans=1)
    data = resolve_data_config(grey)
    assert data.input_size[0] == 1
    assert len(data.mean) == len(data.std) == 1


def test_overrides() -> None:
    base = resolve_data_config(DefaultCfg())
    assert resolve_data_config(base, input_size=96).input_size == (3, 96, 96)
    assert resolve_data_config(base, input_size=(96, 128)).input_size == (3, 96, 128)
    one = resolve_data_config(base, input_size=(1, 64, 64), mean=0.5, std=[0.25])
    assert (one.input_size, one.mean, one.std) == ((1, 64, 64), (0.5,), (0.25,))
    assert resolve_data_config(base, mean=0.5).mean == (0.5, 0.5, 0.5)
    changed = resolve_data_config(base, interpolation="bilinear", crop_pct=1, crop_mode="squash")
    assert (changed.interpolation, changed.crop_pct, changed.crop_mode) == ("bilinear", 1.0, "squash")
    assert resolve_data_config(base, crop_pct=None, mean=None) == base  # None leaves a field as it is
    assert resolve_data_config(base, input_size=np.int64(64)).input_size == (3, 64, 64)  # numpy integers count


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"crop_pct": 0}, "crop_pct=0"),
        ({"crop_pct": 1.5}, "crop_pct=1.5"),
        ({"crop_pct": math.nan}, "crop_pct=nan"),
        ({"crop_pct": "0.9"}, "crop_pct='0.9'"),
        ({"interpolation": "lanczos"}, "'bilinear', 'bicubic', 'nearest'"),
        ({"crop_mode": "middle"}, "'center', 'squash', 'border'"),
        ({"mean": (0.5, 0.5)}, "mean=(0.5, 0.5)"),
        ({"std": (0.2, 0.0, 0.2)}, "positive"),
        ({"std": -1.0}, "std"),
        ({"input_size": (0, 224)}, "input_size=(0, 224)"),
        ({"input_size": True}, "input_size=True"),
        ({"input_size": 224.0}, "input_size=224.0"),
        ({"input_size": (1, 64, 64)}, "one per input channel"),  # 1 channel, but the mean has 3 values
    ],
)
def test_bad_overrides_name_the_value(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidValueError, match=r".") as info:
        resolve_data_config(DefaultCfg(), **overrides)
    assert named in str(info.value)


def test_unknown_override_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidArgumentError, match=r"'img_size'.*input_size, interpolation, mean, std, crop_pct"):
        resolve_data_config(DefaultCfg(), img_size=224)


def test_a_source_without_a_cfg_is_refused() -> None:
    with pytest.raises(InvalidValueError, match="cannot resolve a data config from Linear"):
        resolve_data_config(nn.Linear(2, 2))
    with pytest.raises(ZooError, match="unknown model 'resnet1800'"):
        resolve_data_config("resnet1800")
    with pytest.raises(InvalidValueError, match="use_test_size=1"):
        resolve_data_config(DefaultCfg(), use_test_size=1)  # type: ignore[arg-type]  # the point: not a bool


def test_data_config_is_frozen_and_round_trips() -> None:
    data = cfg()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        data.crop_pct = 1.0  # type: ignore[misc]  # the point: a frozen value refuses assignment
    assert resolve_data_config(data.to_dict()) == data
    assert resolve_data_config(data) == data


# --- the eval pipeline ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
@pytest.mark.parametrize(("width", "height"), [(500, 375), (375, 500), (97, 150), (224, 224)])
def test_eval_output_size_and_normalisation(mode: str, width: int, height: int) -> None:
    colour = (255, 128, 0)
    data = cfg(input_size=(3, 96, 128), crop_pct=1.0 if mode == "border" else 0.9, crop_mode=mode)
    out = create_transform(data)(solid(width, height, colour))
    assert type(out) is torch.Tensor
    assert out.dtype == torch.float32
    assert out.shape == (3, 96, 128)
    if mode != "border":  # the whole crop is the image's colour
        expected = normalised(colour).view(3, 1, 1).expand(3, 96, 128)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@given(
    width=st.integers(1, 400),
    height=st.integers(1, 400),
    target=st.tuples(st.integers(8, 64), st.integers(8, 64)),
    crop_pct=st.floats(0.5, 1.0),
    mode=st.sampled_from(["center", "squash", "border"]),
    interpolation=st.sampled_from(["bilinear", "bicubic", "nearest"]),
)
def test_any_image_gives_the_input_size(
    width: int, height: int, target: tuple[int, int], crop_pct: float, mode: str, interpolation: str
) -> None:
    data = cfg(input_size=(3, *target), crop_pct=crop_pct, crop_mode=mode, interpolation=interpolation)
    out = create_transform(data)(solid(width, height, (40, 90, 250)))
    assert out.shape == (3, *target)
    # border mode pads the edges, the odd pixel after the image: this pixel is always the image
    centre = out[:, (target[0] - 1) // 2, (target[1] - 1) // 2]
    torch.testing.assert_close(centre, normalised((40, 90, 250)), atol=1e-6, rtol=0)


def test_resize_size_is_the_input_over_crop_pct_rounded_down() -> None:
    assert eval_resize_size(cfg(crop_pct=0.875)) == (256, 256)
    assert eval_resize_size(cfg(crop_pct=0.95)) == (235, 235)
    assert eval_resize_size(cfg(input_size=(3, 160, 192), crop_pct=0.95)) == (168, 202)


def test_center_crop_takes_the_middle() -> None:
    # crop_pct 1 and a short side equal to the target: no resampling, so the crop's pixels are the image's own
    img = coordinates(300, 224)
    out = create_transform(cfg(crop_pct=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))(img)
    left = round((300 - 224) / 2)
    assert torch.equal(out[0, 0], torch.arange(left, left + 224).remainder(256).float() / 255)
    assert torch.equal(out[1, :, 0], torch.arange(224).float() / 255)


def test_center_crop_of_a_non_square_target_resizes_the_short_side() -> None:
    # target 100x200 (h x w) at crop_pct 1 on a 400x400 image: the scale is set by the width, 2x down
    img = coordinates(400, 400)
    out = create_transform(
        cfg(input_size=(3, 100, 200), crop_pct=1.0, interpolation="nearest", mean=(0, 0, 0), std=(1, 1, 1))
    )(img)
    assert out.shape == (3, 100, 200)
    rows = (out[1, :, 0] * 255).round()
    # 200x200 after the resize; the crop keeps rows 50..149 of it, i.e. source rows about 100..299
    assert 95 <= rows[0].item() <= 105
    assert 295 - 256 <= rows[-1].item() <= 305 - 256  # green is y mod 256


def test_squash_keeps_the_whole_image_and_center_does_not() -> None:
    # a wide image, black in its left quarter: squash shows it, a centre crop of the middle does not
    img = solid(400, 100, (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 100, 100))
    plain = {"crop_pct": 1.0, "interpolation": "nearest", "mean": (0, 0, 0), "std": (1, 1, 1)}
    squashed = create_transform(cfg(crop_mode="squash", **plain))(img)
    assert squashed[:, :, :50].max() == 0  # the left quarter, squashed into 56 columns
    assert squashed[:, :, 60:].min() == 1
    centred = create_transform(cfg(crop_mode="center", **plain))(img)
    assert centred.min() == 1


def test_border_pads_with_the_mean_colour() -> None:
    # 400x100 at crop_pct 1: the long side fits 224, the image is 224x56 and pads 84 rows above and below
    out = create_transform(cfg(crop_mode="border", crop_pct=1.0))(solid(400, 100, (200, 30, 60)))
    pad = normalised(tuple(round(255 * m) for m in MEAN)).view(3, 1, 1)
    torch.testing.assert_close(out[:, :84], pad.expand(3, 84, 224), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, -84:], pad.expand(3, 84, 224), atol=1e-6, rtol=0)
    assert pad.abs().max() < 0.01  # the mean colour normalises to about zero
    torch.testing.assert_close(out[:, 86:138], normalised((200, 30, 60)).view(3, 1, 1).expand(3, 52, 224))


def test_a_uint8_tensor_gives_the_pil_result() -> None:
    img = coordinates(320, 240)
    as_tensor = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    transform = create_transform(cfg(crop_pct=1.0, input_size=(3, 240, 240)))
    assert torch.equal(transform(as_tensor), transform(img))  # no resampling here: only crop, scale, normalise


def test_channel_mismatch_is_a_clear_error() -> None:
    with pytest.raises(InvalidValueError, match=r"1 channel\(s\).*expects 3.*convert\('RGB'\)"):
        create_transform(cfg())(Image.new("L", (64, 64)))
    with pytest.raises(InvalidValueError, match="uint8"):
        create_transform(cfg(crop_pct=1.0, input_size=(3, 8, 8)))(torch.zeros(3, 8, 8, dtype=torch.int32))


def test_create_transform_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidValueError, match="expected a DataConfig"):
        create_transform(zoo.get_default_cfg("resnet18"))  # type: ignore[arg-type]  # the point: a DefaultCfg
    with pytest.raises(InvalidArgumentError, match="hflip only apply to a training pipeline"):
        create_transform(cfg(), hflip=0.5)
    with pytest.raises(InvalidValueError, match="is_training='yes'"):
        create_transform(cfg(), is_training="yes")  # type: ignore[arg-type]  # the point: not a bool


# --- the training pipeline -----------------------------------------------------------------------------------------


def test_training_output_size_and_randomness() -> None:
    transform = create_transform(cfg(input_size=(3, 64, 96)), is_training=True, color_jitter=0.4)
    img = coordinates(300, 200)
    torch.manual_seed(0)
    first = transform(img)
    second = transform(img)
    assert first.shape == second.shape == (3, 64, 96)
    assert not torch.equal(first, second)  # random crops
    torch.manual_seed(0)
    assert torch.equal(transform(img), first)  # and reproducible from the seed


def test_training_flip_mirrors_the_crop() -> None:
    # the whole image as the crop (scale 1, the image's own aspect ratio): the flip is the only difference
    img = coordinates(128, 64)
    whole: dict[str, Any] = {"scale": (1.0, 1.0), "ratio": (2.0, 2.0)}
    data = cfg(input_size=(3, 32, 64))
    flipped = create_transform(data, is_training=True, hflip=1.0, **whole)(img)
    straight = create_transform(data, is_training=True, hflip=0.0, **whole)(img)
    assert torch.equal(flipped, straight.flip(-1))
    assert not torch.equal(flipped, straight)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"scale": (0.5, 0.1)}, "scale=(0.5, 0.1)"),
        ({"scale": (0.1, 1.5)}, "scale=1.5"),
        ({"ratio": (0.0, 1.0)}, "ratio=(0.0, 1.0)"),
        ({"ratio": 1.0}, "ratio=1.0"),
        ({"hflip": 1.5}, "hflip=1.5"),
        ({"color_jitter": -0.1}, "color_jitter=-0.1"),
    ],
)
def test_bad_training_arguments_name_the_value(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        create_transform(cfg(), is_training=True, **kwargs)
    assert named in str(info.value)


# --- the optional extra and labels ---------------------------------------------------------------------------------


def test_missing_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "zoo.data.transforms")
    import zoo.data

    with pytest.raises(FeatureNotAvailableError, match=r"pip install 'zoo\[data\]'"):
        zoo.data.create_transform  # noqa: B018  # the lookup is what loads torchvision


def test_import_zoo_and_zoo_data_loads_neither_torchvision_nor_pillow() -> None:
    code = "import sys, zoo, zoo.data, zoo.cli; print(sorted(m for m in ('torchvision', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_imagenet_classes() -> None:
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert [c.index for c in classes] == list(range(1000))
    synsets = [c.synset for c in classes]
    assert synsets == sorted(synsets)  # the ImageNet-1k class index is the sorted order of its synsets
    assert len(set(synsets)) == 1000
    assert all(c.name and c.lemmas.startswith(c.name.split(" ")[0][:1]) for c in classes[:5])
    assert (classes[0].synset, classes[0].name) == ("n01440764", "tench")
    assert (classes[999].synset, classes[999].name) == ("n15075141", "toilet tissue")
