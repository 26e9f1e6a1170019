"""zoo.data in the reference's (timm's) call shapes (issue 22): lazy `zoo.data`, resolve_data_config(args, model=...),
create_transform(**config) with the reference's keywords, its training augmentations, and its constants."""

from __future__ import annotations

import argparse
import logging
import math
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

import zoo
import zoo.data as zd
from zoo.data.augment import RAND_OPS, RAND_OPS_INCREASING, EightBitAugment, RandAugment, RandomErasing, TrimBorder
from zoo.data.augment_config import AugMixSpec, RandAugmentSpec, TrivialAugmentSpec, parse_auto_augment
from zoo.domain.errors import FeatureNotAvailableError, InvalidArgumentError, InvalidValueError, ZooError
from zoo.domain.values import DefaultCfg

KEYS = ["input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode"]


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic RGB image with gradients, a disc and pixel noise: resampling differences show in it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 127 + 120 * np.sin(x / (7 + seed)) * np.cos(y / 11)
    g = 255 * x / max(width - 1, 1)
    b = 255 * ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2)
    arr = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def steps(transform: Any) -> list[Any]:
    return list(transform.transforms)


def of_type(transform: Any, kind: type) -> list[Any]:
    return [t for t in steps(transform) if isinstance(t, kind)]


# --- `import zoo` stays cheap; zoo.data is an attribute ------------------------------------------------------------


def test_zoo_data_is_a_lazy_attribute() -> None:
    code = (
        "import sys, zoo\n"
        "heavy = ('torch', 'torchvision', 'PIL', 'numpy', 'zoo.data')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "zoo.data.resolve_data_config\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "zoo.data.create_transform\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'PIL') if m in sys.modules))\n"
        "print('data' in dir(zoo), 'data' in zoo.__all__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["[]", "['zoo.data']", "['PIL', 'torch', 'torchvision']", "True True"]


def test_zoo_data_is_the_module() -> None:
    assert zoo.data is sys.modules["zoo.data"]
    with pytest.raises(AttributeError, match="no attribute 'datum'"):
        zoo.datum  # noqa: B018  # the lookup is the point


# --- constants -----------------------------------------------------------------------------------------------------


def test_constants_are_the_reference_values_defined_once() -> None:
    assert zd.IMAGENET_DEFAULT_MEAN == (0.485, 0.456, 0.406)
    assert zd.IMAGENET_DEFAULT_STD == (0.229, 0.224, 0.225)
    assert zd.IMAGENET_INCEPTION_MEAN == zd.IMAGENET_INCEPTION_STD == (0.5, 0.5, 0.5)
    assert zd.IMAGENET_DPN_MEAN == (124 / 255, 117 / 255, 104 / 255)
    assert zd.IMAGENET_DPN_STD == (1 / (0.0167 * 255),) * 3
    assert zd.OPENAI_CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert zd.OPENAI_CLIP_STD == (0.26862954, 0.26130258, 0.27577711)
    assert (zd.DEFAULT_CROP_PCT, zd.DEFAULT_CROP_MODE) == (0.875, "center")
    # one definition: DefaultCfg's defaults are the ImageNet statistics and crop defaults
    cfg = DefaultCfg()
    assert (cfg.mean, cfg.std, cfg.crop_pct, cfg.crop_mode) == (
        zd.IMAGENET_DEFAULT_MEAN,
        zd.IMAGENET_DEFAULT_STD,
        zd.DEFAULT_CROP_PCT,
        zd.DEFAULT_CROP_MODE,
    )


# --- resolve_data_config in the reference's call shapes ------------------------------------------------------------


@pytest.fixture(scope="module")
def r50() -> torch.nn.Module:
    return zoo.create_model("resnet50.a1_in1k")


def test_the_config_reads_as_a_dict_with_the_reference_keys(r50: torch.nn.Module) -> None:
    config = zd.resolve_data_config({}, model=r50)
    assert isinstance(config, Mapping)
    assert list(config) == KEYS == list(dict(config))
    assert config["crop_pct"] == config.crop_pct == 0.95
    assert config == zd.resolve_data_config(r50) == zd.resolve_data_config(model=r50)
    assert config == zd.resolve_model_data_config(r50)
    assert {**config} == {k: getattr(config, k) for k in KEYS}
    with pytest.raises(KeyError):
        config["url"]


def test_args_override_the_models_cfg(r50: torch.nn.Module) -> None:
    base = zd.resolve_data_config({}, model=r50)
    assert zd.resolve_data_config({"img_size": 288}, model=r50).input_size == (3, 288, 288)
    both = {"input_size": (3, 256, 256), "img_size": 288, "crop_pct": 1.0}  # input_size wins over img_size
    assert dict(zd.resolve_data_config(both, model=r50)) == {**base, "input_size": (3, 256, 256), "crop_pct": 1.0}
    stats = zd.resolve_data_config({"mean": (0.5,), "std": [0.25]}, model=r50)
    assert (stats.mean, stats.std) == ((0.5,) * 3, (0.25,) * 3)  # one value, repeated per channel
    grey = zd.resolve_data_config({"in_chans": 1, "mean": 0.5, "std": 0.5}, model=r50)
    assert (grey.input_size, grey.mean) == ((1, 224, 224), (0.5,))
    # an argparse bag: unset (None or '') keys and keys that are not data fields change nothing
    namespace = argparse.Namespace(interpolation="", crop_pct=None, model="resnet50", batch_size=8, img_size=None)
    assert zd.resolve_data_config(namespace, model=r50) == base
    assert zd.resolve_data_config(vars(namespace), model=r50) == base
    assert zd.resolve_model_data_config(r50, {"crop_mode": "squash"}).crop_mode == "squash"


def test_pretrained_cfg_and_use_test_size() -> None:
    cfg = zoo.get_default_cfg("resnet18.a1_in1k")
    model = zoo.create_model("resnet18")  # its own cfg differs: pretrained_cfg= is read instead
    config = zd.resolve_data_config({}, pretrained_cfg=cfg.to_dict(), model=model, use_test_size=True)
    assert (config.input_size, config.crop_pct) == (cfg.test_input_size, cfg.test_crop_pct)
    assert zd.resolve_data_config(pretrained_cfg=cfg) == zd.resolve_data_config(cfg)
    assert zd.resolve_data_config({"crop_pct": 0.5}, pretrained_cfg=cfg, use_test_size=True).crop_pct == 0.5


def test_verbose_logs_the_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="zoo.data"):
        zd.resolve_data_config({}, pretrained_cfg=DefaultCfg(), verbose=True)
    assert "crop_pct=0.875" in caplog.text
    assert "interpolation='bicubic'" in caplog.text


@pytest.mark.parametrize(
    ("call", "error", "named"),
    [
        (lambda: zd.resolve_data_config(), InvalidArgumentError, "needs something to resolve"),
        (lambda: zd.resolve_data_config(5, model=DefaultCfg()), InvalidValueError, "args=5 is invalid"),
        (lambda: zd.resolve_data_config({"img_size": 0}, pretrained_cfg={}), InvalidValueError, "input_size=0"),
        (lambda: zd.resolve_data_config({"in_chans": "3"}, pretrained_cfg={}), InvalidValueError, "in_chans='3'"),
        (lambda: zd.resolve_data_config({"crop_mode": "x"}, pretrained_cfg={}), InvalidValueError, "'squash'"),
        (lambda: zd.resolve_data_config({}, model=torch.nn.Linear(1, 1)), InvalidValueError, "from Linear"),
        (lambda: zd.resolve_data_config({}, pretrained_cfg={}, verbose=1), InvalidValueError, "verbose=1"),  # type: ignore[arg-type]  # the point: not a bool
        (lambda: zd.resolve_model_data_config(None), InvalidArgumentError, "needs a model"),
    ],
)
def test_bad_resolve_calls_name_the_value(call: Any, error: type[ZooError], named: str) -> None:
    with pytest.raises(error) as info:
        call()
    assert named in str(info.value)


# --- the eval pipeline against an independently composed torchvision pipeline --------------------------------------


def expected_eval(img: Image.Image, config: Mapping[str, Any], border: int = 0) -> torch.Tensor:
    """The documented eval semantics, composed from torchvision functionals step by step."""
    _, height, width = config["input_size"]
    pct, mode = config["crop_pct"], config["crop_mode"]
    interp = InterpolationMode(config["interpolation"])
    if border:
        img = F.crop(img, border, border, img.height - 2 * border, img.width - 2 * border)
    scaled = (math.floor(height / pct), math.floor(width / pct))  # the input size over crop_pct, rounded down
    if mode == "squash":
        img = F.resize(img, list(scaled), interpolation=interp)
    elif mode == "center" and scaled[0] == scaled[1]:
        img = F.resize(img, [scaled[0]], interpolation=interp)  # the short side, the long one in proportion
    else:  # keep the aspect ratio: both sides cover the target ("center"), or both fit inside it ("border")
        ratios = (img.height / scaled[0], img.width / scaled[1])
        ratio = max(ratios) if mode == "border" else min(ratios)
        img = F.resize(img, [round(img.height / ratio), round(img.width / ratio)], interpolation=interp)
    if mode == "border":
        pad_h, pad_w = max(height - img.height, 0), max(width - img.width, 0)
        fill = [round(255 * m) for m in config["mean"]]
        img = F.pad(img, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=fill)
    img = F.center_crop(img, [height, width])
    tensor = F.pil_to_tensor(img).float().div(255)  # to [0, 1] by dividing, as the reference's to-tensor does
    normalised: torch.Tensor = F.normalize(tensor, list(config["mean"]), list(config["std"]))
    return normalised


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
@pytest.mark.parametrize(
    ("size", "pct", "interpolation"),
    [
        ((224, 224), 0.875, "bicubic"),
        ((299, 299), 0.9, "bilinear"),
        ((192, 256), 0.95, "bicubic"),
        ((160, 160), 1.0, "nearest"),
    ],
)
def test_eval_output_is_the_documented_pipeline(
    size: tuple[int, int], pct: float, interpolation: str, mode: str
) -> None:
    cfg = {"input_size": (3, *size), "interpolation": interpolation, "crop_pct": pct, "crop_mode": mode}
    config = zd.resolve_data_config({}, pretrained_cfg=cfg)
    transform = zd.create_transform(**config)
    for i, (w, h) in enumerate([(500, 375), (375, 500), (97, 150), (640, 257)]):
        img = photo(w, h, i)
        assert torch.equal(transform(img), expected_eval(img, config)), (w, h)
    assert torch.equal(transform(img), zd.create_transform(config)(img))  # the DataConfig form is the same pipeline


def test_keyword_form_takes_the_reference_defaults() -> None:
    transform = zd.create_transform(input_size=200)
    config: dict[str, object] = {"input_size": (3, 200, 200), "interpolation": "bilinear"}
    config |= {"mean": zd.IMAGENET_DEFAULT_MEAN}
    config |= {"std": zd.IMAGENET_DEFAULT_STD, "crop_pct": 0.875, "crop_mode": "center"}
    img = photo(320, 240)
    assert torch.equal(transform(img), expected_eval(img, config))
    assert torch.equal(zd.create_transform()(img), expected_eval(img, {**config, "input_size": (3, 224, 224)}))
    trimmed = zd.create_transform((3, 200, 200), interpolation="bicubic", crop_border_pixels=10)
    assert isinstance(steps(trimmed)[1], TrimBorder)
    expected = expected_eval(img, {**config, "interpolation": "bicubic"}, border=10)
    assert torch.equal(trimmed(img), expected)
    # a DataConfig with data keywords: they override it
    assert zd.create_transform(zd.resolve_data_config({}, pretrained_cfg={}), crop_pct=1.0)(img).shape == (3, 224, 224)


def test_no_aug_and_unnormalised_outputs() -> None:
    img = photo(300, 200)
    square = zd.create_transform(96, is_training=True, no_aug=True)
    config: dict[str, object] = {"input_size": (3, 96, 96), "interpolation": "bilinear"}
    config |= {"mean": zd.IMAGENET_DEFAULT_MEAN}
    config |= {"std": zd.IMAGENET_DEFAULT_STD, "crop_pct": 1.0, "crop_mode": "center"}
    assert torch.equal(square(img), expected_eval(img, config))  # short side to 96, centre crop
    squashed = zd.create_transform((3, 64, 96), is_training=True, no_aug=True)
    resize = of_type(squashed, v2.Resize)[0]
    assert list(resize.size) == [64, 96]  # a (height, width) size resizes both sides, as the reference does
    raw = zd.create_transform(96, normalize=False)(img)
    assert raw.dtype == torch.uint8
    assert torch.equal(raw.float() / 255, zd.create_transform(96, mean=0, std=1)(img))


# --- training pipelines: their steps and parameters, run on a real image --------------------------------------------


def test_default_training_pipeline_in_both_forms(r50: torch.nn.Module) -> None:
    config = zd.resolve_data_config({}, model=r50)
    reference = zd.create_transform(**config, is_training=True)
    crop = of_type(reference, v2.RandomResizedCrop)[0]
    assert (crop.size, crop.scale, crop.ratio) == ([224, 224], (0.08, 1.0), (3 / 4, 4 / 3))
    assert crop.interpolation == InterpolationMode.BICUBIC
    assert [f.p for f in of_type(reference, v2.RandomHorizontalFlip)] == [0.5]
    jitter = of_type(reference, v2.ColorJitter)[0]
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.6, 1.4),) * 3 + (None,)
    assert not of_type(zd.create_transform(config, is_training=True), v2.ColorJitter)  # off with a DataConfig
    assert not of_type(zd.create_transform(**config, is_training=True, color_jitter=None), v2.ColorJitter)
    torch.manual_seed(0)
    out = reference(photo(320, 240))
    assert out.shape == (3, 224, 224)
    torch.manual_seed(0)
    assert torch.equal(reference(photo(320, 240)), out)


def test_flips_jitter_grayscale_blur() -> None:
    transform = zd.create_transform(
        64,
        is_training=True,
        hflip=0.0,
        vflip=0.25,
        color_jitter=(0.1, 0.2, 0.3, 0.05),
        color_jitter_prob=0.8,
        grayscale_prob=0.2,
        gaussian_blur_prob=0.1,
    )
    kinds = [type(t) for t in steps(transform)]
    assert v2.RandomHorizontalFlip not in kinds
    assert of_type(transform, v2.RandomVerticalFlip)[0].p == 0.25
    jitter_apply, blur_apply = of_type(transform, v2.RandomApply)
    assert jitter_apply.p == 0.8
    jitter = jitter_apply.transforms[0]
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (
        (0.9, 1.1),
        (0.8, 1.2),
        (0.7, 1.3),
        (-0.05, 0.05),
    )
    assert of_type(transform, v2.RandomGrayscale)[0].p == 0.2
    assert blur_apply.p == 0.1
    assert blur_apply.transforms[0].kernel_size == (23, 23)
    assert transform(photo(100, 80)).shape == (3, 64, 64)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("rand-m9-mstd0.5", RandAugmentSpec(magnitude=9, magnitude_std=0.5)),
        ("rand-m9-mstd0.5-inc1", RandAugmentSpec(magnitude=9, magnitude_std=0.5, increasing=True)),
        (
            "rand-m7-n3-p0.3-mstd101-mmax20",
            RandAugmentSpec(magnitude=7, num_ops=3, prob=0.3, magnitude_std=math.inf, magnitude_max=20),
        ),
        ("rand", RandAugmentSpec()),
    ],
)
def test_rand_augment_strings(text: str, spec: RandAugmentSpec) -> None:
    assert parse_auto_augment(text) == spec
    transform = zd.create_transform(
        48, is_training=True, auto_augment=text, interpolation="bicubic", mean=zd.OPENAI_CLIP_MEAN
    )
    (step,) = of_type(transform, RandAugment)
    assert step.spec == spec
    assert step.ops == (RAND_OPS_INCREASING if spec.increasing else RAND_OPS)
    assert (step.interpolation, step.fill) == (InterpolationMode.BICUBIC, [123, 117, 104])  # the mean colour
    assert not of_type(transform, v2.ColorJitter)  # the reference turns colour jitter off with an auto_augment
    kinds = [type(t) for t in steps(transform)]
    assert kinds.index(RandAugment) == kinds.index(v2.RandomHorizontalFlip) + 1
    assert transform(photo(90, 70)).shape == (3, 48, 48)


def test_augmix_and_trivial_augment_strings() -> None:
    assert parse_auto_augment("augmix") == AugMixSpec()
    assert parse_auto_augment("augmix-m5-w4-d2") == AugMixSpec(severity=5, width=4, depth=2)
    mix = zd.create_transform(48, is_training=True, auto_augment="augmix-m5-w4-d2-a0.5")
    (step,) = of_type(mix, EightBitAugment)
    assert isinstance(step.transform, v2.AugMix)
    inner = step.transform
    assert (inner.severity, inner.mixture_width, inner.chain_depth, inner.alpha) == (5, 4, 2, 0.5)
    assert parse_auto_augment("trivialaugment") == TrivialAugmentSpec()
    trivial = zd.create_transform(48, is_training=True, auto_augment="trivialaugment")
    assert isinstance(of_type(trivial, EightBitAugment)[0].transform, v2.TrivialAugmentWide)
    for transform in (mix, trivial):
        assert transform(photo(90, 70)).shape == (3, 48, 48)
        floats = transform(torch.rand(3, 70, 90))  # a float image is augmented as 8-bit and stays float
        assert floats.dtype == torch.float32
        assert floats.shape == (3, 48, 48)


def test_random_erasing_comes_after_normalisation() -> None:
    transform = zd.create_transform(32, is_training=True, re_prob=0.25, re_mode="pixel", re_count=3, re_num_splits=2)
    last, before = steps(transform)[-1], steps(transform)[-2]
    assert isinstance(last, RandomErasing)
    assert isinstance(before, v2.Normalize)
    assert (last.probability, last.mode, last.max_count, last.num_splits) == (0.25, "pixel", 3, 2)
    assert not of_type(zd.create_transform(32, is_training=True), RandomErasing)  # re_prob 0: none
    assert transform(photo(50, 40)).shape == (3, 32, 32)


# --- the augmentations zoo writes itself ---------------------------------------------------------------------------


def test_rand_augment_ops_on_images_and_tensors() -> None:
    augment = RandAugment(RandAugmentSpec(), interpolation=InterpolationMode.BICUBIC)
    img = photo(40, 30)
    tensor = F.pil_to_tensor(img)
    for name in RAND_OPS + RAND_OPS_INCREASING:
        for magnitude in (0.0, 5.0, 10.0):
            out = augment.apply_op(name, img, magnitude)
            assert isinstance(out, Image.Image)
            assert out.size == img.size
            out_tensor = augment.apply_op(name, tensor, magnitude)
            assert isinstance(out_tensor, torch.Tensor)
            assert out_tensor.shape == tensor.shape
            assert out_tensor.dtype == torch.uint8

    def on_tensor(name: str, magnitude: float) -> torch.Tensor:
        out = augment.apply_op(name, tensor, magnitude)
        assert isinstance(out, torch.Tensor)
        return out

    # the reference's magnitude scale: 10 is full strength
    assert torch.equal(on_tensor("Solarize", 5.0), torch.where(tensor >= 128, 255 - tensor, tensor))
    assert torch.equal(on_tensor("Brightness", 10.0), F.adjust_brightness(tensor, 1.9))
    assert torch.equal(on_tensor("Posterize", 0.0), torch.zeros_like(tensor))  # no bits kept
    black = augment.apply_op("Posterize", img, 0.0)
    assert isinstance(black, Image.Image)
    assert np.asarray(black).max() == 0
    added = (tensor.int() + 110).clamp(max=255).byte()
    assert torch.equal(on_tensor("SolarizeAdd", 10.0), torch.where(tensor < 128, added, tensor))
    with pytest.raises(InvalidValueError, match="unknown RandAugment op 'Cutout'"):
        augment.apply_op("Cutout", img, 5.0)


def test_rand_augment_magnitude_noise_and_probability() -> None:
    noisy = RandAugment(RandAugmentSpec(magnitude=9, magnitude_std=0.5))
    torch.manual_seed(0)
    draws = torch.tensor([noisy._magnitude() for _ in range(2000)])
    assert draws.max() <= 10.0  # clipped to magnitude_max
    assert 8.7 < draws.mean() < 9.1
    assert 0.3 < draws.std() < 0.6
    uniform = RandAugment(RandAugmentSpec(magnitude=6, magnitude_std=math.inf))
    draws = torch.tensor([uniform._magnitude() for _ in range(2000)])
    assert draws.min() >= 0
    assert draws.max() <= 6
    assert 2.7 < draws.mean() < 3.3
    tensor = F.pil_to_tensor(photo(30, 20))
    assert torch.equal(RandAugment(RandAugmentSpec(prob=0.0))(tensor), tensor)
    assert torch.equal(RandAugment(RandAugmentSpec(num_ops=0))(tensor), tensor)
    floats = RandAugment(RandAugmentSpec(prob=1.0))(tensor.float() / 255)
    assert isinstance(floats, torch.Tensor)
    assert floats.dtype == torch.float32


@pytest.mark.parametrize("mode", ["const", "rand", "pixel"])
def test_random_erasing_modes(mode: str) -> None:
    image = torch.full((3, 40, 50), 7.0)
    torch.manual_seed(1)
    out = RandomErasing(1.0, mode=mode)(image)
    assert torch.equal(image, torch.full((3, 40, 50), 7.0))  # the input is left as it was
    erased = (out != 7.0).any(0)
    rows, cols = erased.any(1).nonzero(), erased.any(0).nonzero()
    box = out[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert erased.sum() == box.shape[1] * box.shape[2]  # one rectangle
    if mode == "const":
        assert (box == 0).all()
    elif mode == "rand":  # one colour per rectangle
        assert torch.equal(box, box[:, :1, :1].expand_as(box))
    else:
        assert box.flatten(1).std(1).min() > 0.5  # noise per pixel


def test_random_erasing_count_and_splits() -> None:
    torch.manual_seed(0)
    eraser = RandomErasing(1.0, max_count=3, num_splits=2)
    batch = eraser(torch.ones(4, 3, 32, 32))
    assert torch.equal(batch[:2], torch.ones(2, 3, 32, 32))  # the first batch // num_splits stay clean
    assert (batch[2:] == 0).any()
    assert not (RandomErasing(0.0)(torch.ones(3, 8, 8)) == 0).any()


# --- user errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error", "named"),
    [
        ("rand-x3", InvalidValueError, "valid keys: m (magnitude)"),
        ("rand-m9.5", InvalidValueError, "'m9.5' needs an int"),
        ("rand-p2", InvalidValueError, "p must be a probability in [0, 1]"),
        ("rand-mstd-1", InvalidValueError, "mstd must be a number >= 0"),
        ("rand-inc2", InvalidValueError, "0 or 1"),
        ("rand-", InvalidValueError, "is not a key followed by its value"),
        ("rand-tweights", FeatureNotAvailableError, "'tweights'"),
        ("augmix-m11", InvalidValueError, "m must be an int in [1, 10]"),
        ("augmix-w0", InvalidValueError, "w must be an int >= 1"),
        ("augmix-b1", FeatureNotAvailableError, "'b1'"),
        ("augmix-z3", InvalidValueError, "valid keys: m (severity 1..10)"),
        ("v0", FeatureNotAvailableError, "AutoAugment policies"),
        ("autoaugment", InvalidValueError, "'trivialaugment'"),
        ("", InvalidValueError, "'rand-m9-mstd0.5'"),
    ],
)
def test_a_bad_auto_augment_names_it_and_what_is_valid(text: str, error: type[ZooError], named: str) -> None:
    with pytest.raises(error) as info:
        zd.create_transform(32, is_training=True, auto_augment=text)
    assert repr(text) in str(info.value)
    assert named in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"re_prob": 0.5, "re_mode": "noise"}, InvalidValueError, "'const', 'rand', 'pixel'"),
        ({"re_prob": 0.5, "re_count": 0}, InvalidValueError, "re_count=0"),
        ({"re_prob": 1.5}, InvalidValueError, "re_prob=1.5"),
        ({"scale": (0.5, 2.0)}, InvalidValueError, "scale=2.0"),
        ({"vflip": -0.1}, InvalidValueError, "vflip=-0.1"),
        ({"color_jitter": (0.1, 0.2)}, InvalidValueError, "3 or 4 numbers"),
        ({"color_jitter": (0.1, 0.2, 0.3, 0.7)}, InvalidValueError, "hue factor must be in [0, 0.5]"),
        ({"color_jitter_prob": 2}, InvalidValueError, "color_jitter_prob=2"),
        ({"interpolation": "random"}, InvalidValueError, "'bilinear', 'bicubic', 'nearest'"),
        ({"train_crop_mode": "rkrc"}, FeatureNotAvailableError, "'rrc'"),
        ({"train_crop_mode": "x"}, InvalidValueError, "'rrc', 'rkrc', 'rkrr'"),
        ({"use_prefetcher": True}, FeatureNotAvailableError, "use_prefetcher=True"),
        ({"re_prob": 0.5, "normalize": False}, InvalidArgumentError, "normalize=False"),
    ],
)
def test_bad_training_arguments_name_the_value(kwargs: dict[str, Any], error: type[ZooError], named: str) -> None:
    with pytest.raises(error) as info:
        zd.create_transform(32, is_training=True, **kwargs)
    assert named in str(info.value)


def test_eval_pipelines_refuse_training_arguments_that_would_do_nothing() -> None:
    # the reference's own defaults, as its loaders pass them, are accepted in the keyword form
    zd.create_transform(32, hflip=0.5, color_jitter=0.4, re_prob=0.0, re_mode="const", auto_augment=None)
    with pytest.raises(InvalidArgumentError, match="auto_augment, re_prob only apply to a training pipeline"):
        zd.create_transform(32, auto_augment="rand-m9", re_prob=0.25)
    with pytest.raises(InvalidArgumentError, match="no_aug only apply"):
        zd.create_transform(32, no_aug=True)
    with pytest.raises(InvalidValueError, match=r"got a DefaultCfg as its first argument: expected a DataConfig"):
        zd.create_transform(DefaultCfg())  # type: ignore[arg-type]  # the point: a DefaultCfg is not a DataConfig
    with pytest.raises(InvalidValueError, match="crop_border_pixels=30 leaves nothing of a 50x40"):
        zd.create_transform(32, crop_border_pixels=30)(photo(50, 40))
    with pytest.raises(InvalidValueError, match="crop_border_pixels=-1"):
        zd.create_transform(32, crop_border_pixels=-1)
