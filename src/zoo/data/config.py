"""DataConfig: how images are prepared for a model, resolved from its cfg with validated overrides.

Pure values: importing this module imports neither torch nor torchvision.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import cast, get_args

import attrs

from zoo.domain.checks import check_bool, check_choice, check_float, check_int, check_ints, is_int
from zoo.domain.errors import InvalidArgumentError, InvalidValueError
from zoo.domain.values import CropMode, Interpolation

__all__ = [
    "CROP_MODES",
    "INTERPOLATIONS",
    "MAX_IMAGE_SIDE",
    "MAX_RESIZE_SIDE",
    "OVERRIDES",
    "DataConfig",
    "resolve_data_config",
]

INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
CROP_MODES: tuple[str, ...] = get_args(CropMode)

# What a cfg that leaves a field unset means: the values every ImageNet-trained cfg in the catalogue starts from.
_DEFAULTS: Mapping[str, object] = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}
OVERRIDES: tuple[str, ...] = tuple(_DEFAULTS)

# The bounds of a DataConfig, wide around what published cfgs use (sides 106 to 896 pixels, crop_pct 0.875 to
# 1.0) and tight enough that a pipeline always runs. What cannot run is a resize too large to allocate: the eval
# resize is a side over crop_pct, so a crop_pct of 1e-4 or a side of 200000 would ask for millions of pixels a
# side and fail, out of memory, only when the first image arrives. The bound is on that resize, not on crop_pct.
MAX_IMAGE_SIDE = 4096
"""The largest height or width of a model input, in pixels."""
MAX_RESIZE_SIDE = 8192
"""The largest side of the eval resize (the input's side over crop_pct), in pixels."""


def _check_sides(name: str, value: object, sides: Sequence[int]) -> None:
    if max(sides) > MAX_IMAGE_SIDE:
        raise InvalidValueError(
            f"{name}={value!r} is invalid: height and width must be in [1, {MAX_IMAGE_SIDE}] pixels"
        )


def _input_size(value: object) -> tuple[int, int, int]:
    chans, height, width = check_ints("DataConfig.input_size", value, length=3, ge=1)
    _check_sides("DataConfig.input_size", value, (height, width))
    return (chans, height, width)


def _stats(name: str, value: object) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise InvalidValueError(f"DataConfig.{name}={value!r} is invalid: expected a sequence of numbers")
    items = cast(Sequence[object], value)
    out = tuple(check_float(f"DataConfig.{name}", v, ge=0.0 if name == "std" else None) for v in items)
    if name == "std" and any(v == 0 for v in out):
        raise InvalidValueError(f"DataConfig.std={value!r} is invalid: expected positive numbers")
    return out


def _mean(value: object) -> tuple[float, ...]:
    return _stats("mean", value)


def _std(value: object) -> tuple[float, ...]:
    return _stats("std", value)


def _crop_pct(value: object) -> float:
    bad = not isinstance(value, numbers.Real) or isinstance(value, bool)
    if bad or not 0.0 < float(cast(numbers.Real, value)) <= 1.0:  # False for nan
        raise InvalidValueError(
            f"DataConfig.crop_pct={value!r} is invalid: expected a number in (0, 1], the fraction of each side of "
            "the resized image that the eval crop keeps (published cfgs use 0.875 to 1.0)"
        )
    return float(cast(numbers.Real, value))


def _interpolation(value: object) -> Interpolation:
    return cast(Interpolation, check_choice("DataConfig.interpolation", value, INTERPOLATIONS))


def _crop_mode(value: object) -> CropMode:
    return cast(CropMode, check_choice("DataConfig.crop_mode", value, CROP_MODES))


@attrs.frozen(kw_only=True)
class DataConfig:
    """How an image becomes a model input: size, resize interpolation, crop, and normalisation.

    input_size is (channels, height, width); mean and std have one value per channel; crop_pct is
    the fraction of each side of the resized image the eval crop keeps; crop_mode is how the eval crop
    is taken ("center": resize the short side, crop the centre; "squash": resize both sides, ignoring
    the aspect ratio; "border": resize the long side and pad with the mean colour). Height and width
    are at most MAX_IMAGE_SIDE (4096) pixels, and crop_pct is in (0, 1] with the eval resize (the
    longer side over crop_pct) at most MAX_RESIZE_SIDE (8192) pixels.
    """

    input_size: tuple[int, int, int] = attrs.field(converter=_input_size)
    interpolation: Interpolation = attrs.field(converter=_interpolation)
    mean: tuple[float, ...] = attrs.field(converter=_mean)
    std: tuple[float, ...] = attrs.field(converter=_std)
    crop_pct: float = attrs.field(converter=_crop_pct)
    crop_mode: CropMode = attrs.field(converter=_crop_mode)

    def __attrs_post_init__(self) -> None:
        longest = max(self.image_size)
        if longest / self.crop_pct > MAX_RESIZE_SIDE:
            lowest = longest / MAX_RESIZE_SIDE
            raise InvalidValueError(
                f"DataConfig.crop_pct={self.crop_pct!r} is invalid for input_size={self.input_size}: the eval resize "
                f"would be {longest / self.crop_pct:.0f} pixels a side, over {MAX_RESIZE_SIDE}; expected crop_pct in "
                f"[{lowest:.4g}, 1] for this size (published cfgs use 0.875 to 1.0)"
            )
        chans = self.input_size[0]
        for name, stats in (("mean", self.mean), ("std", self.std)):
            if len(stats) != chans:
                raise InvalidValueError(
                    f"DataConfig.{name}={stats!r} is invalid: expected {chans} value(s), one per input channel "
                    f"(input_size={self.input_size}); a single value is repeated for every channel"
                )

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return (self.input_size[1], self.input_size[2])

    def to_dict(self) -> dict[str, object]:
        """Plain-data form (tuples become lists), for JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.asdict(self).items()}


def resolve_data_config(
    model_or_cfg: object,
    *,
    use_test_size: bool = False,
    **overrides: object,
) -> DataConfig:
    """The DataConfig a model's weights were trained with, with overrides applied.

    model_or_cfg: a model built by zoo (its `pretrained_cfg`), anything with a `pretrained_cfg` or
    `default_cfg` mapping, a DefaultCfg or a dict cfg, a DataConfig, or a registered name (`NAME.TAG`).
    use_test_size: take the cfg's test_input_size and test_crop_pct where it has them.
    overrides: input_size (an int for a square image, (height, width), or (channels, height, width)),
    interpolation, mean, std (a single value is repeated per channel), crop_pct, crop_mode; None
    leaves a field as the cfg has it.
    """
    check_bool("use_test_size", use_test_size)
    unknown = sorted(k for k in overrides if k not in OVERRIDES)
    if unknown:
        raise InvalidArgumentError(
            f"resolve_data_config() got unknown override(s) {', '.join(map(repr, unknown))}; "
            f"valid overrides: {', '.join(OVERRIDES)}, use_test_size"
        )
    values = dict(_source_fields(model_or_cfg, use_test_size=use_test_size))
    given = {k: v for k, v in overrides.items() if v is not None}
    if "input_size" in given:
        given["input_size"] = _override_size(given["input_size"], cast(tuple[int, ...], values["input_size"]))
    chans = cast(tuple[int, ...], given.get("input_size", values["input_size"]))[0]
    for name in ("mean", "std"):
        if name in given:
            given[name] = _override_stats(name, given[name], chans)
    values.update(given)
    return DataConfig(**values)


def _source_fields(source: object, *, use_test_size: bool) -> dict[str, object]:
    if isinstance(source, DataConfig):
        return attrs.asdict(source, recurse=False)
    cfg = _source_cfg(source)
    fields = {k: cfg.get(k) for k in OVERRIDES}
    if use_test_size:
        fields["input_size"] = cfg.get("test_input_size") or fields["input_size"]
        fields["crop_pct"] = cfg.get("test_crop_pct") or fields["crop_pct"]
    # unset (None or empty) fields take the defaults, as a dict cfg written for timm leaves them out
    return {k: _DEFAULTS[k] if v is None or v == "" else v for k, v in fields.items()}


def _source_cfg(source: object) -> Mapping[str, object]:
    if isinstance(source, str):
        from zoo import api  # only a name needs the registry; a model or cfg does not

        return api.get_default_cfg(source)
    if isinstance(source, Mapping):
        return cast(Mapping[str, object], source)
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(source, attr, None)
        if isinstance(cfg, Mapping):
            return cast(Mapping[str, object], cfg)
    raise InvalidValueError(
        f"cannot resolve a data config from {type(source).__qualname__}: expected a model built by zoo (or anything "
        "with a pretrained_cfg or default_cfg mapping), a DefaultCfg or dict cfg, a DataConfig, or a model name"
    )


def _override_size(value: object, current: tuple[int, ...]) -> tuple[int, ...]:
    if is_int(value):
        side = check_int("input_size", value, ge=1)
        _check_sides("input_size", value, (side,))
        return (current[0], side, side)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 2:
        height, width = check_ints("input_size", value, length=2, ge=1)
        _check_sides("input_size", value, (height, width))
        return (current[0], height, width)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 3:
        size = check_ints("input_size", value, length=3, ge=1)
        _check_sides("input_size", value, size[1:])
        return size
    raise InvalidValueError(
        f"input_size={value!r} is invalid: expected an int (a square image), (height, width) "
        f"or (channels, height, width) of positive ints, height and width at most {MAX_IMAGE_SIDE}"
    )


def _override_stats(name: str, value: object, chans: int) -> object:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return (value,) * chans
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 1:
        return tuple(value) * chans
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) != chans:
        raise InvalidValueError(
            f"{name}={value!r} is invalid: expected {chans} value(s), one per input channel, or a single value"
        )
    return value
