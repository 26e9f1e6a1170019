"""create_transform: the eval and training pipelines a DataConfig describes, on torchvision.transforms.v2.

This module imports torchvision (the `zoo[data]` extra); zoo.data imports it only when a transform
is asked for.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from zoo.data.config import DataConfig, resolve_data_config
from zoo.domain.checks import check_bool, check_choice, check_int, is_int
from zoo.domain.errors import FeatureNotAvailableError, InvalidArgumentError, InvalidValueError

try:
    from PIL.Image import Image
    from torchvision.transforms import InterpolationMode, v2
    from torchvision.transforms.v2 import functional as F

    from zoo.data.augment import TrimBorder
    from zoo.data.training import TrainOptions, erasing_step, train_steps
except ImportError as e:  # the optional extra is missing: say how to get it
    raise FeatureNotAvailableError(
        f"image transforms need torchvision and Pillow, the optional extra of zoo: pip install 'zoo[data]' ({e})"
    ) from e

__all__ = ["DEFAULT", "Default", "ImageTransform", "create_transform", "eval_resize_size"]


class ImageTransform(Protocol):
    """What create_transform returns (a torchvision.transforms.v2.Compose): image in, model input out."""

    @property
    def transforms(self) -> list[nn.Module]:
        """The steps, in order."""
        ...

    def __call__(self, img: Image | torch.Tensor | npt.NDArray[np.uint8]) -> torch.Tensor:
        """The transformed image as a float32 (C, H, W) tensor ((B, C, H, W) for a batch)."""
        ...


_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def eval_resize_size(cfg: DataConfig) -> tuple[int, int]:
    """(height, width) the eval pipeline resizes to before cropping: the input size over crop_pct, rounded down."""
    height, width = cfg.image_size
    return (math.floor(height / cfg.crop_pct), math.floor(width / cfg.crop_pct))


def _size_of(img: Image | torch.Tensor) -> tuple[int, int]:
    height, width = F.get_size(img)
    return (height, width)


class ResizeKeepRatio(nn.Module):
    """Resize keeping the aspect ratio so that one side meets its target: the short one ("cover") or the long ("fit").

    "cover" leaves both sides at least their target (a centre crop follows); "fit" leaves both at most
    their target (padding follows). New sides are rounded to the nearest pixel.
    """

    def __init__(self, size: tuple[int, int], *, interpolation: InterpolationMode, fit: bool) -> None:
        super().__init__()
        self.size = size
        self.interpolation = interpolation
        self.fit = fit

    def forward(self, img: Image | torch.Tensor) -> Image | torch.Tensor:
        """img resized; a PIL image stays a PIL image."""
        height, width = _size_of(img)
        ratios = (height / self.size[0], width / self.size[1])
        ratio = max(ratios) if self.fit else min(ratios)
        # at least a pixel: an extreme aspect ratio ("fit" on a 600x1 image) would round a side to nothing
        new_size = [max(1, round(height / ratio)), max(1, round(width / ratio))]
        resized: Image | torch.Tensor = F.resize(img, new_size, interpolation=self.interpolation, antialias=True)
        return resized

    def extra_repr(self) -> str:
        return f"size={self.size}, interpolation={self.interpolation.value}, {'fit' if self.fit else 'cover'}"


class PadToSize(nn.Module):
    """Pad an image evenly on each side up to at least size, with a fill colour per channel."""

    def __init__(self, size: tuple[int, int], *, fill: Sequence[int]) -> None:
        super().__init__()
        self.size = size
        self.fill = list(fill)

    def forward(self, img: Image | torch.Tensor) -> Image | torch.Tensor:
        """img padded; unchanged when it already covers size."""
        height, width = _size_of(img)
        pad_h, pad_w = max(self.size[0] - height, 0), max(self.size[1] - width, 0)
        if not pad_h and not pad_w:
            return img
        # the odd pixel goes to the right and bottom
        padding = [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2]
        padded: Image | torch.Tensor = F.pad(img, padding, fill=self.fill)
        return padded

    def extra_repr(self) -> str:
        return f"size={self.size}, fill={self.fill}"


def _channel_error(img: object, chans: int, expected: int, *, hint: str = "") -> InvalidValueError:
    return InvalidValueError(
        f"the image has {chans or 'no'} channel(s) ({_described(img)}) but the data config expects "
        f"{expected}; convert it first (a PIL image: image.convert('RGB') for 3 channels, 'L' for 1){hint}"
    )


def _described(img: object) -> str:
    if img is None:
        return "None"
    if isinstance(img, Image):
        return f"a {img.width}x{img.height} (width x height) PIL image, mode {img.mode!r}"
    if isinstance(img, torch.Tensor):
        return f"a {img.ndim}-D tensor of shape {tuple(img.shape)} and dtype {img.dtype}"
    if isinstance(img, np.ndarray):
        return f"a {img.ndim}-D numpy array of shape {img.shape} and dtype {img.dtype}"
    kind = type(img)
    return f"a {kind.__qualname__ if kind.__module__ == 'builtins' else f'{kind.__module__}.{kind.__qualname__}'}"


class CheckImage(nn.Module):
    """The first step: refuse what the pipeline cannot transform, naming it; a numpy array becomes a tensor.

    Accepted: a PIL image; a uint8 (0..255) or floating-point (0..1) tensor [C, H, W], or a batch of them
    ([B, C, H, W], any leading dimensions); a numpy uint8 array [H, W, C] (as np.asarray(pil_image) gives),
    transformed as the same image in a uint8 tensor. C must be the data config's channel count, and the
    height and width at least one pixel.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def _refuse(self, img: object, why: str) -> InvalidValueError:
        return InvalidValueError(
            f"cannot transform {_described(img)}: {why}; expected a PIL image, a uint8 or floating-point tensor "
            f"[C, H, W] (or a batch [B, C, H, W]), or a numpy uint8 array [H, W, C], with C={self.channels}"
        )

    def forward(self, img: object) -> Image | torch.Tensor:
        """img, checked; a numpy array as a uint8 [C, H, W] tensor."""
        if isinstance(img, Image):
            if not img.width or not img.height:
                raise self._refuse(img, "it is empty")
            bands = len(img.getbands())
            if bands != self.channels:
                raise _channel_error(img, bands, self.channels)
            return img
        if isinstance(img, torch.Tensor):
            if img.ndim < 3:
                raise self._refuse(img, "a tensor needs a channel dimension (one channel is [1, H, W])")
            if img.dtype != torch.uint8 and not img.is_floating_point():
                raise self._refuse(img, "image tensors must be uint8 (0..255) or floating point (0..1)")
            if not img.shape[-1] or not img.shape[-2]:
                raise self._refuse(img, "it is empty")
            if img.shape[-3] != self.channels:
                raise _channel_error(img, img.shape[-3], self.channels)
            return img
        if isinstance(img, np.ndarray):
            if img.ndim != 3:
                raise self._refuse(img, "a numpy array must be [H, W, C] (one channel is array[..., None])")
            if img.dtype != np.uint8:
                raise self._refuse(
                    img, "a numpy array must be uint8 (0..255); pass floating-point data as a [C, H, W] tensor"
                )
            if not img.shape[0] or not img.shape[1]:
                raise self._refuse(img, "it is empty")
            if img.shape[2] != self.channels:
                raise _channel_error(img, img.shape[2], self.channels, hint="; a numpy array is read as [H, W, C]")
            # a copy only where torch cannot share the array: read-only (np.asarray of a PIL image) or strided
            return torch.from_numpy(np.require(img, requirements=["C", "W"])).permute(2, 0, 1)
        raise self._refuse(img, "not an image")

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class ToFloatImage(nn.Module):
    """A PIL image or uint8 tensor as a float32 (C, H, W) tensor in [0, 1]; checks the channel count."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, img: Image | torch.Tensor) -> torch.Tensor:
        """The image as float32 in [0, 1] (uint8 values divided by 255; float tensors kept as they are)."""
        tensor = img if isinstance(img, torch.Tensor) else F.pil_to_tensor(img)
        tensor = tensor.as_subclass(torch.Tensor)  # a plain tensor: the output is a model input, not a tv_tensor
        chans = tensor.shape[-3] if tensor.ndim >= 3 else 0
        if chans != self.channels:
            raise _channel_error(tensor, chans, self.channels)
        if tensor.is_floating_point():
            return tensor.to(torch.float32)
        if tensor.dtype != torch.uint8:
            raise InvalidValueError(
                f"image tensors must be uint8 (0..255) or floating point (0..1), got {tensor.dtype}"
            )
        return tensor.to(torch.float32).div(255)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def _eval_steps(cfg: DataConfig) -> list[nn.Module]:
    size = cfg.image_size
    resize = eval_resize_size(cfg)
    mode = _MODES[cfg.interpolation]
    if cfg.crop_mode == "squash":
        return [v2.Resize(list(resize), interpolation=mode, antialias=True), v2.CenterCrop(list(size))]
    if cfg.crop_mode == "border":
        fill = [round(255 * m) for m in cfg.mean]  # the mean colour: zero after normalisation
        return [
            ResizeKeepRatio(resize, interpolation=mode, fit=True),
            PadToSize(size, fill=fill),
            v2.CenterCrop(list(size)),
        ]
    if resize[0] == resize[1]:
        # short side to the target, long side scaled and truncated to an int (torchvision's own rule)
        first: nn.Module = v2.Resize(resize[0], interpolation=mode, antialias=True)
    else:
        first = ResizeKeepRatio(resize, interpolation=mode, fit=False)
    return [first, v2.CenterCrop(list(size))]


class Default(enum.Enum):
    """The type of DEFAULT: an argument left at its default where None means something of its own."""

    TOKEN = "default"


DEFAULT = Default.TOKEN
"""color_jitter's default: 0.4 in the keyword (reference) form of create_transform, off with a DataConfig."""


class ToImageTensor(nn.Module):
    """A PIL image as a uint8 (C, H, W) tensor; a tensor as it is (the reference's output with normalize=False)."""

    def forward(self, img: Image | torch.Tensor) -> torch.Tensor:
        """The image as a plain tensor, its dtype kept (uint8 for a PIL image)."""
        tensor = img if isinstance(img, torch.Tensor) else F.pil_to_tensor(img)
        return tensor.as_subclass(torch.Tensor)


# the reference's defaults for the training arguments: an eval pipeline built in the keyword form takes these
# (as the reference's own loaders pass them) and refuses anything else, which would silently do nothing
_REFERENCE_TRAIN_DEFAULTS: dict[str, object] = {
    "no_aug": False,
    "train_crop_mode": None,
    "scale": None,
    "ratio": None,
    "hflip": 0.5,
    "vflip": 0.0,
    "color_jitter": 0.4,
    "color_jitter_prob": None,
    "grayscale_prob": 0.0,
    "gaussian_blur_prob": 0.0,
    "auto_augment": None,
    "re_prob": 0.0,
    "re_mode": "const",
    "re_count": 1,
    "re_num_splits": 0,
}
_TRAIN_CROP_MODES = ("rrc", "rkrc", "rkrr")


def _first_argument_error(value: object) -> InvalidValueError:
    kind = type(value).__qualname__
    return InvalidValueError(
        f"create_transform() got a {kind} as its first argument: expected a DataConfig "
        "(zoo.data.resolve_data_config(model) makes one; a dict config goes in as create_transform(**config)), "
        "or an input size: an int (a square image), (height, width) or (channels, height, width)"
    )


def _keyword_config(
    input_size: object, *, interpolation: object, mean: object, std: object, crop_pct: object, crop_mode: object
) -> DataConfig:
    """The DataConfig the reference's keyword arguments describe, with the reference's defaults."""
    if isinstance(input_size, (str, bytes, bool)) or not (isinstance(input_size, Sequence) or is_int(input_size)):
        raise _first_argument_error(input_size)
    chans = len(mean) if isinstance(mean, Sequence) and not isinstance(mean, (str, bytes)) else 3
    base = {"input_size": (chans, 224, 224), "interpolation": "bilinear"}  # the reference's keyword defaults
    return resolve_data_config(
        base,
        input_size=input_size,
        interpolation=interpolation,
        mean=mean,
        std=std,
        crop_pct=crop_pct,
        crop_mode=crop_mode,
    )


def _refuse_unsupported(train_crop_mode: object, **switches: object) -> None:
    for name, value in switches.items():
        if check_bool(name, value):
            raise FeatureNotAvailableError(
                f"{name}=True is not built by zoo: its pipelines always end in a normalised float tensor "
                "(normalize=False for the unnormalised image tensor)"
            )
    if train_crop_mode is not None:
        mode = check_choice("train_crop_mode", train_crop_mode, _TRAIN_CROP_MODES)
        if mode != "rrc":
            raise FeatureNotAvailableError(
                f"train_crop_mode={mode!r} is not built by zoo; the training crop is 'rrc' (random resized crop)"
            )


def _given_training_args(train_args: dict[str, object], *, keyword_form: bool) -> list[str]:
    """The training arguments an eval pipeline would ignore: any set, or in the keyword form any off the defaults."""
    given = [k for k, v in train_args.items() if v is not None and v is not DEFAULT and v is not False]
    if keyword_form:
        given = [k for k in given if train_args[k] != _REFERENCE_TRAIN_DEFAULTS[k]]
    return given


def create_transform(
    input_size: DataConfig | int | Sequence[int] = 224,
    is_training: bool = False,
    no_aug: bool = False,
    train_crop_mode: str | None = None,
    scale: tuple[float, float] | None = None,
    ratio: tuple[float, float] | None = None,
    hflip: float | None = None,
    vflip: float | None = None,
    color_jitter: float | Sequence[float] | Default | None = DEFAULT,
    color_jitter_prob: float | None = None,
    grayscale_prob: float | None = None,
    gaussian_blur_prob: float | None = None,
    auto_augment: str | None = None,
    interpolation: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    re_prob: float | None = None,
    re_mode: str | None = None,
    re_count: int | None = None,
    re_num_splits: int | None = None,
    crop_pct: float | None = None,
    crop_mode: str | None = None,
    crop_border_pixels: int | None = None,
    tf_preprocessing: bool = False,
    use_prefetcher: bool = False,
    normalize: bool = True,
    separate: bool = False,
) -> ImageTransform:
    """The pipeline from an image to a model input, on torchvision.transforms.v2.

    Two call shapes. zoo's: `create_transform(data_cfg, is_training=False, ...)` with a DataConfig
    (resolve_data_config makes one; interpolation, mean, std, crop_pct, crop_mode given as well override
    it). The reference's (timm's): `create_transform(**config, is_training=...)` or
    `create_transform(input_size=224, interpolation=..., mean=..., std=..., crop_pct=..., crop_mode=...)`,
    with the reference's keyword names and defaults (interpolation "bilinear", ImageNet mean and std,
    crop_pct 0.875, crop_mode "center", color_jitter 0.4 when training).

    The image: a PIL image, a uint8 (0..255) or floating-point (0..1) tensor [C, H, W] or a batch
    [B, C, H, W], or a numpy uint8 array [H, W, C]; anything else (a 2-D tensor, a list, an empty
    image, the wrong channel count) is refused with an InvalidValueError naming it.

    Eval (is_training=False): trim crop_border_pixels off each edge (if given), resize by crop_pct and
    crop as crop_mode says ("center": short side to size / crop_pct rounded down, centre crop; "squash":
    both sides, aspect ignored; "border": long side, padded with the mean colour), to float, normalise.
    Training: random resized crop (scale=(0.08, 1.0) of the area, ratio=(3/4, 4/3)), horizontal flip
    (hflip=0.5), vertical flip (vflip=0), then auto_augment if given (the reference's strings:
    "rand-m9-mstd0.5-inc1" RandAugment, "augmix-m5-w4-d2" AugMix, "trivialaugment"; colour jitter is off
    with it) or colour jitter (a number for brightness, contrast and saturation, or 3 or 4 factors;
    color_jitter_prob applies it with that probability; with a DataConfig it is off unless given, in
    the keyword form 0.4), grayscale_prob, gaussian_blur_prob (kernel 23), to float, normalise, and
    random erasing with probability re_prob (re_mode "const" | "rand" | "pixel", up to re_count
    rectangles, re_num_splits for a batch's clean share). no_aug=True trains on the eval-style resize
    and centre crop instead. normalize=False ends in the image tensor as it is (uint8 for a PIL image).

    Training arguments given to an eval pipeline are refused: with a DataConfig, any; in the keyword
    form, those other than the reference's defaults (which the reference ignores there).
    """
    check_bool("is_training", is_training)
    check_bool("no_aug", no_aug)
    check_bool("normalize", normalize)
    _refuse_unsupported(
        train_crop_mode=train_crop_mode,
        tf_preprocessing=tf_preprocessing,
        use_prefetcher=use_prefetcher,
        separate=separate,
    )
    keyword_form = not isinstance(input_size, DataConfig)
    data_cfg = (_keyword_config if keyword_form else resolve_data_config)(
        input_size, interpolation=interpolation, mean=mean, std=std, crop_pct=crop_pct, crop_mode=crop_mode
    )
    train_args: dict[str, object] = {
        "no_aug": no_aug,
        "train_crop_mode": train_crop_mode,
        "scale": scale,
        "ratio": ratio,
        "hflip": hflip,
        "vflip": vflip,
        "color_jitter": color_jitter,
        "color_jitter_prob": color_jitter_prob,
        "grayscale_prob": grayscale_prob,
        "gaussian_blur_prob": gaussian_blur_prob,
        "auto_augment": auto_augment,
        "re_prob": re_prob,
        "re_mode": re_mode,
        "re_count": re_count,
        "re_num_splits": re_num_splits,
    }
    chans = data_cfg.input_size[0]
    mode = _MODES[data_cfg.interpolation]
    steps: list[nn.Module] = [CheckImage(chans)]
    erasing = None
    if not is_training:
        given = _given_training_args(train_args, keyword_form=keyword_form)
        if given:
            raise InvalidArgumentError(
                f"{', '.join(given)} only apply to a training pipeline: pass is_training=True, or leave them unset"
            )
        border = 0 if crop_border_pixels is None else check_int("crop_border_pixels", crop_border_pixels, ge=0)
        steps += [TrimBorder(border)] if border else []
        steps += _eval_steps(data_cfg)
    elif no_aug:
        # the reference resizes a square int size's short side, and a (height, width) size's both sides
        size: int | list[int] = data_cfg.image_size[0] if is_int(input_size) else list(data_cfg.image_size)
        steps += [v2.Resize(size, interpolation=mode, antialias=True), v2.CenterCrop(size)]
    else:
        skip = ("no_aug", "train_crop_mode")
        given_train = {k: v for k, v in train_args.items() if v is not None and v is not DEFAULT and k not in skip}
        if color_jitter is DEFAULT:
            given_train["color_jitter"] = _REFERENCE_TRAIN_DEFAULTS["color_jitter"] if keyword_form else None
        options = TrainOptions(**given_train)
        steps += train_steps(data_cfg, options, interpolation=mode)
        erasing = erasing_step(options)
    if not normalize:
        if erasing is not None:
            raise InvalidArgumentError("re_prob erases after normalisation: with normalize=False leave it at 0")
        steps.append(ToImageTensor())
    else:
        steps += [ToFloatImage(chans), v2.Normalize(list(data_cfg.mean), list(data_cfg.std))]
        steps += [erasing] if erasing is not None else []
    pipeline: ImageTransform = v2.Compose(steps)
    return pipeline
