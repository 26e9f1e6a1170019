"""zoo.data under inputs it cannot use (issue 19): what a transform is given, and DataConfig bounds."""

from __future__ import annotations

import json
import warnings
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from refdata import REFERENCE_DIR
from zoo.data import DataConfig, create_transform, resolve_data_config
from zoo.data.config import MAX_IMAGE_SIDE, MAX_RESIZE_SIDE
from zoo.data.transforms import eval_resize_size
from zoo.domain.errors import InvalidValueError, ZooError
from zoo.domain.values import DefaultCfg

ACCEPTED = "expected a PIL image, a uint8 or floating-point tensor [C, H, W] (or a batch [B, C, H, W]), or a numpy"

# one eval pipeline per crop mode, and the training pipeline: each starts from a different step
PIPELINES = [
    pytest.param({"crop_mode": "center"}, False, id="center"),
    pytest.param({"crop_mode": "squash"}, False, id="squash"),
    pytest.param({"crop_mode": "border", "crop_pct": 1.0}, False, id="border"),
    pytest.param({}, True, id="training"),
]


def small(**fields: object) -> DataConfig:
    """A 3-channel 32x32 DataConfig with the given fields."""
    base: dict[str, object] = {
        "input_size": (3, 32, 32),
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "crop_pct": 0.875,
        "crop_mode": "center",
    }
    return DataConfig(**{**base, **fields})


def gradient(width: int, height: int) -> Image.Image:
    """An RGB image with content in every channel, so that resampling differences would show."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 3 + y) % 256, (y * 5) % 256, (x * y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


# --- item 1: what a transform is given -----------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "training"), PIPELINES)
@pytest.mark.parametrize(
    ("img", "named", "why"),
    [
        pytest.param([[0, 1], [2, 3]], "cannot transform a list", "not an image", id="list"),
        pytest.param(None, "cannot transform None", "not an image", id="none"),
        pytest.param(
            torch.zeros(40, 40), "a 2-D tensor of shape (40, 40)", "needs a channel dimension", id="2d-tensor"
        ),
        pytest.param(torch.zeros(40), "a 1-D tensor of shape (40,)", "needs a channel dimension", id="1d-tensor"),
        pytest.param(
            torch.zeros(3, 40, 40, dtype=torch.int64),
            "dtype torch.int64",
            "must be uint8 (0..255) or floating point",
            id="int64-tensor",
        ),
        pytest.param(
            np.zeros((40, 40, 3), np.float32),
            "numpy array of shape (40, 40, 3) and dtype float32",
            "must be uint8",
            id="float-numpy",
        ),
        pytest.param(np.zeros((40, 40), np.uint8), "2-D numpy array of shape (40, 40)", "[H, W, C]", id="2d-numpy"),
    ],
)
def test_what_is_not_an_image_is_refused_naming_it_and_what_is_accepted(
    img: object, named: str, why: str, fields: dict[str, Any], training: bool
) -> None:
    transform = create_transform(small(**fields), is_training=training)
    with pytest.raises(InvalidValueError) as info:
        transform(img)  # type: ignore[arg-type]  # the point: not an image the pipeline takes
    message = str(info.value)
    assert named in message
    assert why in message
    assert ACCEPTED in message
    assert "C=3" in message


@pytest.mark.parametrize(("fields", "training"), PIPELINES)
@pytest.mark.parametrize(
    ("img", "named"),
    [
        pytest.param(Image.new("RGB", (0, 10)), "a 0x10 (width x height) PIL image", id="pil-no-width"),
        pytest.param(Image.new("RGB", (10, 0)), "a 10x0 (width x height) PIL image", id="pil-no-height"),
        pytest.param(torch.zeros(3, 10, 0), "tensor of shape (3, 10, 0)", id="tensor-no-width"),
        pytest.param(torch.zeros(3, 0, 10, dtype=torch.uint8), "tensor of shape (3, 0, 10)", id="tensor-no-height"),
        pytest.param(torch.zeros(2, 3, 0, 5), "tensor of shape (2, 3, 0, 5)", id="batch-no-height"),
        pytest.param(np.zeros((0, 10, 3), np.uint8), "numpy array of shape (0, 10, 3)", id="numpy-no-height"),
    ],
)
def test_an_empty_image_is_refused(img: object, named: str, fields: dict[str, Any], training: bool) -> None:
    # today: ZeroDivisionError, a reshape RuntimeError, or (PIL, some pipelines) a made-up 32x32 output
    with pytest.raises(InvalidValueError) as info:
        create_transform(small(**fields), is_training=training)(img)  # type: ignore[arg-type]  # numpy input
    assert named in str(info.value)
    assert "it is empty" in str(info.value)
    assert ACCEPTED in str(info.value)


def test_a_channel_mismatch_names_the_image_it_was_given() -> None:
    transform = create_transform(small())
    with pytest.raises(
        InvalidValueError, match=r"4 channel\(s\) \(a 40x30 \(width x height\) PIL image, mode 'RGBA'\)"
    ):
        transform(Image.new("RGBA", (40, 30)))
    # a [C, H, W] numpy array is read as [H, W, C]: 40 channels, and the message says how it was read
    with pytest.raises(InvalidValueError, match=r"40 channel\(s\).*shape \(3, 40, 40\).*read as \[H, W, C\]"):
        transform(np.zeros((3, 40, 40), np.uint8))


@pytest.mark.parametrize(("fields", "training"), PIPELINES)
def test_a_numpy_uint8_hwc_array_is_the_same_image_as_its_tensor(fields: dict[str, Any], training: bool) -> None:
    pil = gradient(57, 43)
    array = np.asarray(pil)  # read-only, as numpy gives a PIL image's pixels
    assert not array.flags.writeable
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    transform = create_transform(small(**fields), is_training=training)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch.from_numpy
        torch.manual_seed(0)
        from_array = transform(array)
    torch.manual_seed(0)
    assert torch.equal(from_array, transform(tensor))
    assert from_array.shape == (3, 32, 32)
    assert np.array_equal(array, np.asarray(pil))  # the caller's pixels are untouched
    if not training:  # and it is the PIL image, up to rounding: torch's antialiased resize and PIL's differ by a level
        torch.testing.assert_close(from_array, transform(pil), atol=1.5 / 255 / 0.25, rtol=0)


def test_a_strided_numpy_view_is_read_as_it_looks() -> None:
    array = np.ascontiguousarray(np.asarray(gradient(40, 32)))
    transform = create_transform(small(crop_pct=1.0))
    mirrored = array[:, ::-1]  # negative strides: torch.from_numpy cannot share it
    assert torch.equal(transform(mirrored), transform(array).flip(-1))


def test_a_numpy_array_matching_a_one_channel_config() -> None:
    grey = small(input_size=(1, 32, 32), mean=(0.5,), std=(0.25,), crop_pct=1.0)
    array = np.full((32, 32, 1), 255, np.uint8)
    out = create_transform(grey)(array)
    assert out.shape == (1, 32, 32)
    assert torch.equal(out, torch.full((1, 32, 32), 2.0))  # (1 - 0.5) / 0.25


# --- item 2: DataConfig bounds -------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop_pct", [0.0, -0.5, float("inf"), float("nan"), 1.01])
def test_crop_pct_outside_its_range_is_refused(crop_pct: float) -> None:
    # as an override, and in a DataConfig made directly
    for make in (partial(resolve_data_config, DefaultCfg(), crop_pct=crop_pct), partial(small, crop_pct=crop_pct)):
        with pytest.raises(InvalidValueError) as info:
            make()
        assert f"crop_pct={crop_pct!r}" in str(info.value)
        assert "(0, 1]" in str(info.value)


@pytest.mark.parametrize("crop_pct", [1e-4, 5e-324, 0.02])
def test_a_crop_pct_whose_resize_cannot_run_is_refused(crop_pct: float) -> None:
    # today 1e-4 builds, and the first image asks for a 2240000-pixel-a-side resize
    size = (3, 224, 224)
    for make in (
        partial(resolve_data_config, DefaultCfg(), crop_pct=crop_pct),
        partial(small, input_size=size, crop_pct=crop_pct),
    ):
        with pytest.raises(InvalidValueError) as info:
            make()
        message = str(info.value)
        assert f"crop_pct={crop_pct!r}" in message
        assert str(MAX_RESIZE_SIDE) in message
        assert "[0.02734, 1]" in message  # the lowest crop_pct a 224 px input can resize from
    with pytest.raises(InvalidValueError, match=r"crop_pct=1e-05"):
        resolve_data_config({"crop_pct": 1e-5})  # a dict cfg is held to the same bound
    with pytest.raises(InvalidValueError, match=r"crop_pct=0.01"):
        resolve_data_config(DefaultCfg(test_crop_pct=0.01), use_test_size=True)


def test_a_low_crop_pct_that_can_run_is_kept() -> None:
    # the bound is the resize, not crop_pct itself: a small input may crop a small centre of its resize
    data = resolve_data_config(DefaultCfg(), input_size=64, crop_pct=0.1)
    assert data.crop_pct == 0.1
    assert create_transform(data)(Image.new("RGB", (50, 40))).shape == (3, 64, 64)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (200000, "input_size=200000"),
        (MAX_IMAGE_SIDE + 1, f"input_size={MAX_IMAGE_SIDE + 1}"),
        ((224, 200000), "input_size=(224, 200000)"),
        ((3, 5000, 224), "input_size=(3, 5000, 224)"),
    ],
)
def test_input_size_past_the_largest_side_is_refused(override: object, named: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        resolve_data_config(DefaultCfg(), input_size=override)
    assert named in str(info.value)
    assert f"[1, {MAX_IMAGE_SIDE}]" in str(info.value)
    with pytest.raises(
        InvalidValueError, match=rf"DataConfig.input_size=\(3, 200000, 200000\).*\[1, {MAX_IMAGE_SIDE}\]"
    ):
        small(input_size=(3, 200000, 200000))
    with pytest.raises(ZooError, match=r"input_size=\[3, 8192, 8192\]"):
        resolve_data_config({"input_size": [3, 8192, 8192]})


def test_the_bounds_themselves_build_and_stay_within_the_largest_resize() -> None:
    # the largest input at the lowest crop_pct it allows: the eval resize is the largest allowed
    edge = small(input_size=(3, MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), crop_pct=MAX_IMAGE_SIDE / MAX_RESIZE_SIDE)
    assert eval_resize_size(edge) == (MAX_RESIZE_SIDE, MAX_RESIZE_SIDE)
    create_transform(edge)
    # and the smallest input still runs end to end
    out = create_transform(small(input_size=(3, 1, 1), crop_pct=0.5))(Image.new("RGB", (5, 3)))
    assert out.shape == (3, 1, 1)
    with pytest.raises(InvalidValueError, match=r"crop_pct=0.4"):
        resolve_data_config(edge, crop_pct=0.4)  # refused since the bounds exist; built a DataConfig before


def _reference_cfgs() -> list[tuple[str, dict[str, Any]]]:
    cfgs = []
    for path in sorted(REFERENCE_DIR.glob("timm-*/*.json")):
        for tag, cfg in json.loads(path.read_text())["pretrained_cfgs"].items():
            cfgs.append((f"{path.parent.name}/{tag}", cfg))
    return cfgs


def test_every_published_cfg_builds_a_transform() -> None:
    """A guard on the bounds' choice: every cfg in tests/reference and the catalogue stays valid (passes today too)."""
    cfgs: list[tuple[str, object]] = list(_reference_cfgs())
    cfgs += [(name, zoo.get_default_cfg(name)) for name in zoo.list_pretrained()]
    assert len(cfgs) > 300
    for name, cfg in cfgs:
        for use_test_size in (False, True):
            data = resolve_data_config(cfg, use_test_size=use_test_size)
            assert max(data.image_size) / data.crop_pct <= MAX_RESIZE_SIDE, name
            assert max(data.image_size) <= MAX_IMAGE_SIDE, name
            create_transform(data)
            create_transform(data, is_training=True)
