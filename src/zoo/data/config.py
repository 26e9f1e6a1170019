"""DataConfig: how images are prepared for a model, resolved from its cfg with validated overrides.

Pure values: importing this module imports neither torch nor torchvision. resolve_data_config takes both
zoo's call shape (a model, cfg or name, then overrides) and the reference's (timm's: a dict of args, then
model= or pretrained_cfg=).
"""

from __future__ import annotations

import argparse
import logging
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast, get_args

import attrs

from zoo.data.constants import (
    DEFAULT_CROP_MODE,
    DEFAULT_CROP_PCT,
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
)
from zoo.domain.checks import check_bool, check_choice, check_float, check_int, check_ints, is_int
from zoo.domain.errors import InvalidArgumentError, InvalidValueError
from zoo.domain.values import CropMode, DefaultCfg, Interpolation

__all__ = [
    "CROP_MODES",
    "INTERPOLATIONS",
    "MAX_IMAGE_SIDE",
    "MAX_RESIZE_SIDE",
    "OVERRIDES",
    "DataConfig",
    "resolve_data_config",
    "resolve_model_data_config",
]

_log = logging.getLogger("zoo.data")

INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
CROP_MODES: tuple[str, ...] = get_args(CropMode)

# What a cfg that leaves a field unset means: the values every ImageNet-trained cfg in the catalogue starts from.
_DEFAULTS: Mapping[str, object] = {
    "input_size": DefaultCfg().input_size,
    "interpolation": DefaultCfg().interpolation,
    "mean": IMAGENET_DEFAULT_MEAN,
    "std": IMAGENET_DEFAULT_STD,
    "crop_pct": DEFAULT_CROP_PCT,
    "crop_mode": DEFAULT_CROP_MODE,
}
OVERRIDES: tuple[str, ...] = tuple(_DEFAULTS)
# keys of the reference's args dict that are not DataConfig fields: a square side, and the channel count
_ARG_ONLY = ("img_size", "in_chans", "chans")

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


# a Mapping of Any, not object: its values differ in type by key, and `create_transform(**config)` must type-check
# as it does against the reference's Dict[str, Any]
@attrs.frozen(kw_only=True)
class DataConfig(Mapping[str, Any]):
    """How an image becomes a model input: size, resize interpolation, crop, and normalisation.

    input_size is (channels, height, width); mean and std have one value per channel; crop_pct is
    the fraction of each side of the resized image the eval crop keeps; crop_mode is how the eval crop
    is taken ("center": resize the short side, crop the centre; "squash": resize both sides, ignoring
    the aspect ratio; "border": resize the long side and pad with the mean colour). Height and width
    are at most MAX_IMAGE_SIDE (4096) pixels, and crop_pct is in (0, 1] with the eval resize (the
    longer side over crop_pct) at most MAX_RESIZE_SIDE (8192) pixels.

    Also a read-only Mapping of its six fields, in the reference's key order (`config["mean"]`,
    `dict(config)`, `create_transform(**config)`), for code written against timm's dict data configs.
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

    def __getitem__(self, key: str) -> Any:  # see the class: the reference's dict is of Any
        if not isinstance(key, str) or key not in OVERRIDES:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(OVERRIDES)

    def __len__(self) -> int:
        return len(OVERRIDES)

    def to_dict(self) -> dict[str, object]:
        """Plain-data form (tuples become lists), for JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.asdict(self).items()}


def resolve_data_config(
    args: object = None,
    pretrained_cfg: Mapping[str, object] | None = None,
    model: object = None,
    use_test_size: bool = False,
    verbose: bool = False,
    **overrides: object,
) -> DataConfig:
    """The DataConfig a model's weights were trained with, with overrides applied.

    Two call shapes. zoo's: `resolve_data_config(source, **overrides)`, where source is a model built
    by zoo (its `pretrained_cfg`), anything with a `pretrained_cfg` or `default_cfg` mapping, a
    DefaultCfg or a dict cfg, a DataConfig, or a registered name (`NAME.TAG`). The reference's (timm's):
    `resolve_data_config(args, model=model)` or `resolve_data_config(args, pretrained_cfg=cfg)`, where
    args is a dict (or an argparse.Namespace) whose data keys override the cfg: input_size, img_size (a
    square side), in_chans / chans, interpolation, mean, std, crop_pct, crop_mode; None or '' leaves a
    field as the cfg has it, other keys are ignored. pretrained_cfg, where given, is read instead of the
    model's own. A dict alone is read as a cfg, its img_size / in_chans / chans applied over it.
    use_test_size: take the cfg's test_input_size and test_crop_pct where it has them.
    verbose: log the resolved fields (logger "zoo.data", level INFO).
    overrides: input_size (an int for a square image, (height, width), or (channels, height, width)),
    interpolation, mean, std (a single value is repeated per channel), crop_pct, crop_mode; None
    leaves a field as the cfg has it. They take precedence over args.

    The result is a frozen DataConfig that also reads as a Mapping with the reference's keys
    (input_size, interpolation, mean, std, crop_pct, crop_mode), so `create_transform(**config)` works.
    """
    check_bool("use_test_size", use_test_size)
    check_bool("verbose", verbose)
    unknown = sorted(k for k in overrides if k not in OVERRIDES)
    if unknown:
        raise InvalidArgumentError(
            f"resolve_data_config() got unknown override(s) {', '.join(map(repr, unknown))}; "
            f"valid overrides: {', '.join(OVERRIDES)}, use_test_size; the reference's args keys (img_size, "
            "in_chans, chans and the overrides) go in a dict as the first argument"
        )
    if model is None and pretrained_cfg is None:
        if args is None:
            raise InvalidArgumentError(
                "resolve_data_config() needs something to resolve: a model (model=...), a pretrained_cfg, or a "
                "model, cfg, DataConfig, name or dict as its first argument"
            )
        source: object = args
        # a dict alone is the cfg; only its reference-only keys (and the per-channel rule for mean and std) remain
        args_given = _args_fields(args, only=(*_ARG_ONLY, "mean", "std")) if _is_args(args) else {}
    else:
        source = pretrained_cfg if pretrained_cfg is not None else model
        args_given = _args_fields(args, only=(*_ARG_ONLY, *OVERRIDES))
    values = dict(_source_fields(source, use_test_size=use_test_size))
    given = {**args_given, **{k: v for k, v in overrides.items() if v is not None}}
    current = cast(tuple[int, ...], values["input_size"])
    chans = given.pop("in_chans", None)
    img_size = given.pop("img_size", None)
    if chans is not None:
        current = (check_int("in_chans", chans, ge=1), *current[1:])
        given.setdefault("input_size", current)
    if img_size is not None and "input_size" not in given:
        given["input_size"] = img_size
    if "input_size" in given:
        given["input_size"] = _override_size(given["input_size"], current)
    chans = cast(tuple[int, ...], given.get("input_size", values["input_size"]))[0]
    for name in ("mean", "std"):
        if name in given:
            given[name] = _override_stats(name, given[name], chans)
    values.update(given)
    config = DataConfig(**values)
    if verbose:
        _log.info("data config: %s", ", ".join(f"{k}={v!r}" for k, v in config.items()))
    return config


def resolve_model_data_config(
    model: object,
    args: object = None,
    pretrained_cfg: Mapping[str, object] | None = None,
    use_test_size: bool = False,
    verbose: bool = False,
) -> DataConfig:
    """resolve_data_config with the model first: its cfg (or pretrained_cfg), with args (a dict) over it."""
    if model is None:
        raise InvalidArgumentError("resolve_model_data_config() needs a model; got None")
    return resolve_data_config(
        args, pretrained_cfg=pretrained_cfg, model=model, use_test_size=use_test_size, verbose=verbose
    )


def _is_args(value: object) -> bool:
    return isinstance(value, argparse.Namespace) or (
        isinstance(value, Mapping) and not isinstance(value, (DataConfig, DefaultCfg))
    )


def _args_fields(args: object, *, only: Sequence[str]) -> dict[str, object]:
    """The data fields an args dict (or argparse.Namespace) sets; None and '' leave a field unset."""
    if args is None:
        return {}
    if not _is_args(args):
        raise InvalidValueError(
            f"args={args!r} is invalid with model= or pretrained_cfg=: expected a dict of arguments (input_size, "
            "img_size, in_chans, interpolation, mean, std, crop_pct, crop_mode) or an argparse.Namespace"
        )
    items = vars(args) if isinstance(args, argparse.Namespace) else cast(Mapping[str, object], args)
    given = {k: items.get(k) for k in only}
    if given.get("in_chans") is None:
        given["in_chans"] = given.pop("chans", None)
    given.pop("chans", None)
    return {k: v for k, v in given.items() if v is not None and not (isinstance(v, str) and not v)}


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
