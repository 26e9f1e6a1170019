"""The training pipeline's steps, in the reference's (timm's) order, from checked arguments.

Random resized crop, flips, then auto_augment (RandAugment, AugMix or TrivialAugment) or colour jitter,
grayscale and blur; and random erasing, which create_transform puts after normalisation. This module
imports torchvision (the `zoo[data]` extra).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from zoo.data.augment import RandomErasing, auto_augment_step
from zoo.data.augment_config import parse_auto_augment
from zoo.data.config import DataConfig
from zoo.domain.checks import check_choice, check_float, check_int
from zoo.domain.errors import InvalidValueError

__all__ = ["RE_MODES", "TrainOptions", "erasing_step", "train_steps"]

RE_MODES: tuple[str, ...] = ("const", "rand", "pixel")
_GAUSSIAN_BLUR_KERNEL = 23  # the reference's fixed kernel for gaussian_blur_prob


@attrs.frozen(kw_only=True)
class TrainOptions:
    """The training arguments of create_transform, with the defaults already applied (unchecked)."""

    scale: object = (0.08, 1.0)
    ratio: object = (3 / 4, 4 / 3)
    hflip: object = 0.5
    vflip: object = 0.0
    color_jitter: object = None
    color_jitter_prob: object = None
    grayscale_prob: object = 0.0
    gaussian_blur_prob: object = 0.0
    auto_augment: object = None
    re_prob: object = 0.0
    re_mode: object = "const"
    re_count: object = 1
    re_num_splits: object = 0


def _pair(name: str, value: object, *, low: float, high: float | None) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise InvalidValueError(f"{name}={value!r} is invalid: expected (min, max), two numbers")
    lo, hi = (check_float(name, v, ge=low, le=high) for v in value)
    if lo > hi or hi <= 0:
        raise InvalidValueError(f"{name}={value!r} is invalid: expected min <= max and max > 0")
    return (lo, hi)


def _jitter(value: object) -> tuple[float, ...] | None:
    """Brightness, contrast, saturation (and hue) factors; None where there is no jitter."""
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) not in (3, 4):
            raise InvalidValueError(
                f"color_jitter={value!r} is invalid: expected a number (brightness, contrast and saturation), or "
                "3 or 4 numbers (brightness, contrast, saturation[, hue])"
            )
        factors = [check_float("color_jitter", v, ge=0.0) for v in value]
        if len(factors) == 4 and factors[3] > 0.5:
            raise InvalidValueError(f"color_jitter={value!r} is invalid: the hue factor must be in [0, 0.5]")
        return tuple(factors) if any(factors) else None
    jitter = check_float("color_jitter", value, ge=0.0)
    return (jitter,) * 3 if jitter > 0 else None


def _probability(name: str, value: object) -> float:
    return check_float(name, value, ge=0.0, le=1.0)


def train_steps(cfg: DataConfig, options: TrainOptions, *, interpolation: InterpolationMode) -> list[nn.Module]:
    """The steps before conversion to float: crop, flips, then auto_augment or colour jitter, grayscale and blur."""
    area = _pair("scale", options.scale, low=0.0, high=1.0)
    aspect = _pair("ratio", options.ratio, low=0.0, high=None)
    if aspect[0] == 0:
        raise InvalidValueError(f"ratio={options.ratio!r} is invalid: expected positive aspect ratios")
    hflip = _probability("hflip", options.hflip)
    vflip = _probability("vflip", options.vflip)
    jitter = _jitter(options.color_jitter)
    jitter_prob = options.color_jitter_prob
    jitter_prob = None if jitter_prob is None else _probability("color_jitter_prob", jitter_prob)
    grayscale = _probability("grayscale_prob", options.grayscale_prob)
    blur = _probability("gaussian_blur_prob", options.gaussian_blur_prob)
    augment = None if options.auto_augment is None else parse_auto_augment(options.auto_augment)

    size = list(cfg.image_size)
    steps: list[nn.Module] = [
        v2.RandomResizedCrop(size, scale=area, ratio=aspect, interpolation=interpolation, antialias=True)
    ]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if vflip > 0:
        steps.append(v2.RandomVerticalFlip(vflip))
    if augment is not None:
        # the reference turns colour jitter off where an auto_augment is on
        fill = [min(255, round(255 * m)) for m in cfg.mean]
        steps.append(auto_augment_step(augment, interpolation=interpolation, fill=fill))
    elif jitter is not None:
        step: nn.Module = v2.ColorJitter(*jitter)
        steps.append(step if jitter_prob is None else v2.RandomApply([step], p=jitter_prob))
    if grayscale > 0:
        steps.append(v2.RandomGrayscale(p=grayscale))
    if blur > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=_GAUSSIAN_BLUR_KERNEL)], p=blur))
    return steps


def erasing_step(options: TrainOptions) -> RandomErasing | None:
    """Random erasing after normalisation, or None where re_prob is 0."""
    prob = _probability("re_prob", options.re_prob)
    mode = str(check_choice("re_mode", options.re_mode, RE_MODES))
    count = check_int("re_count", options.re_count, ge=1)
    splits = check_int("re_num_splits", options.re_num_splits, ge=0)
    if prob == 0:
        return None
    return RandomErasing(prob, mode=mode, max_count=count, num_splits=splits)
