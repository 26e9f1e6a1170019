"""create_transform: the eval and training pipelines a DataConfig describes, on torchvision.transforms.v2.

This module imports torchvision (the `zoo[data]` extra); zoo.data imports it only when a transform
is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from zoo.data.config import DataConfig
from zoo.domain.checks import check_bool, check_float
from zoo.domain.errors import InvalidArgumentError, InvalidValueError

try:
    from PIL.Image import Image
    from torchvision.transforms import InterpolationMode, v2
    from torchvision.transforms.v2 import functional as F
except ImportError as e:  # the optional extra is missing: say how to get it
    from zoo.domain.errors import FeatureNotAvailableError

    raise FeatureNotAvailableError(
        f"image transforms need torchvision and Pillow, the optional extra of zoo: pip install 'zoo[data]' ({e})"
    ) from e

__all__ = ["ImageTransform", "create_transform", "eval_resize_size"]


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


def _pair(name: str, value: object, *, low: float, high: float | None) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise InvalidValueError(f"{name}={value!r} is invalid: expected (min, max), two numbers")
    lo, hi = (check_float(name, v, ge=low, le=high) for v in value)
    if lo > hi or hi <= 0:
        raise InvalidValueError(f"{name}={value!r} is invalid: expected min <= max and max > 0")
    return (lo, hi)


def _train_steps(
    cfg: DataConfig,
    *,
    scale: object,
    ratio: object,
    hflip: object,
    color_jitter: object,
) -> list[nn.Module]:
    area = _pair("scale", scale, low=0.0, high=1.0)
    aspect = _pair("ratio", ratio, low=0.0, high=None)
    if aspect[0] == 0:
        raise InvalidValueError(f"ratio={ratio!r} is invalid: expected positive aspect ratios")
    flip = check_float("hflip", hflip, ge=0.0, le=1.0)
    steps: list[nn.Module] = [
        v2.RandomResizedCrop(
            list(cfg.image_size), scale=area, ratio=aspect, interpolation=_MODES[cfg.interpolation], antialias=True
        )
    ]
    if flip > 0:
        steps.append(v2.RandomHorizontalFlip(flip))
    if color_jitter is not None:
        jitter = check_float("color_jitter", color_jitter, ge=0.0)
        if jitter > 0:
            steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    return steps


def create_transform(
    data_cfg: DataConfig,
    is_training: bool = False,
    *,
    scale: tuple[float, float] | None = None,
    ratio: tuple[float, float] | None = None,
    hflip: float | None = None,
    color_jitter: float | None = None,
) -> ImageTransform:
    """The pipeline data_cfg describes, from an image to a normalised float tensor.

    The image: a PIL image, a uint8 (0..255) or floating-point (0..1) tensor [C, H, W] or a batch
    [B, C, H, W], or a numpy uint8 array [H, W, C]; anything else (a 2-D tensor, a list, an empty
    image, the wrong channel count) is refused with an InvalidValueError naming it.

    Eval (is_training=False): resize by crop_pct and crop as data_cfg.crop_mode says, to float, normalise.
    Training: random resized crop (scale=(0.08, 1.0) of the area, ratio=(3/4, 4/3)), horizontal flip
    (hflip=0.5), optional colour jitter of brightness, contrast and saturation (color_jitter, off by
    default), to float, normalise. The training arguments are refused for an eval pipeline.
    """
    if not isinstance(data_cfg, DataConfig):
        raise InvalidValueError(
            f"data_cfg={data_cfg!r} is invalid: expected a DataConfig (zoo.data.resolve_data_config(model) makes one)"
        )
    check_bool("is_training", is_training)
    train_args = {"scale": scale, "ratio": ratio, "hflip": hflip, "color_jitter": color_jitter}
    steps: list[nn.Module]
    if is_training:
        steps = _train_steps(
            data_cfg,
            scale=(0.08, 1.0) if scale is None else scale,
            ratio=(3 / 4, 4 / 3) if ratio is None else ratio,
            hflip=0.5 if hflip is None else hflip,
            color_jitter=color_jitter,
        )
    else:
        given = [k for k, v in train_args.items() if v is not None]
        if given:
            raise InvalidArgumentError(
                f"{', '.join(given)} only apply to a training pipeline: pass is_training=True, or leave them unset"
            )
        steps = _eval_steps(data_cfg)
    chans = data_cfg.input_size[0]
    steps = [CheckImage(chans), *steps, ToFloatImage(chans), v2.Normalize(list(data_cfg.mean), list(data_cfg.std))]
    pipeline: ImageTransform = v2.Compose(steps)
    return pipeline
