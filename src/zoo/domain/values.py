"""Immutable, validated values: what a checkpoint needs, what a feature tap is, what a model is."""

from __future__ import annotations

import math
import numbers
import operator
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, TypeAlias, cast, get_args

import attrs

from zoo.domain.checks import MAX_WIDTH, check_bool, check_int, is_int, plain_ints
from zoo.domain.errors import InvalidValueError, PruneSpecError, UnknownModelError
from zoo.domain.prune import PruneSpec, parse_prune_spec

if TYPE_CHECKING:
    import torch
    from torch import nn

    StateDict: TypeAlias = dict[str, torch.Tensor]
    CheckpointFilter: TypeAlias = Callable[[StateDict, nn.Module], StateDict]
    ModelConstructor: TypeAlias = Callable[..., nn.Module]
else:  # the aliases only matter to a type checker; keep torch out of `import zoo.domain`
    CheckpointFilter = Callable
    ModelConstructor = Callable

FeatureCls: TypeAlias = Literal["list", "dict", "hook", "getter"]
FEATURE_CLASSES: tuple[str, ...] = get_args(FeatureCls)
Interpolation: TypeAlias = Literal["bilinear", "bicubic", "nearest"]
CropMode: TypeAlias = Literal["center", "squash", "border"]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_\-]*$")
_SHA256_RE = re.compile(r"^([0-9a-f]{64})?$")
_MODULE_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


def _fail(inst: object, field: str, value: object, expected: str) -> InvalidValueError:
    return InvalidValueError(f"{type(inst).__name__}.{field}={value!r} is invalid: expected {expected}")


def _to_int(v: object) -> object:
    """numpy/torch integer scalars become plain ints (one rule everywhere: numbers.Integral, not bool)."""
    return operator.index(cast(SupportsIndex, v)) if is_int(v) and type(v) is not int else v


def _to_str_or_unset(v: object) -> object:
    """None means 'unset' for the optional string fields, as code written for dict cfgs passes it."""
    return "" if v is None else v


def _non_negative_int(inst: object, a: attrs.Attribute[Any], v: object) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _fail(inst, a.name, v, "an int >= 0")


def _positive_int(inst: object, a: attrs.Attribute[Any], v: object) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise _fail(inst, a.name, v, "an int > 0")


def _is_bool(inst: object, a: attrs.Attribute[Any], v: object) -> None:
    if not isinstance(v, bool):
        raise _fail(inst, a.name, v, "True or False")


def _ints(n: int, *, optional: bool = False) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(inst: object, a: attrs.Attribute[Any], v: object) -> None:
        if v is None and optional:
            return
        ok = isinstance(v, tuple) and len(v) == n
        ok = ok and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in cast(tuple[object, ...], v))
        if not ok:
            raise _fail(inst, a.name, v, f"a tuple of {n} positive ints" + (" or None" if optional else ""))

    return check


def _fraction(*, optional: bool = False) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(inst: object, a: attrs.Attribute[Any], v: object) -> None:
        if v is None and optional:
            return
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 < float(v) <= 1.0:
            raise _fail(inst, a.name, v, "a number in (0, 1]")

    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(inst: object, a: attrs.Attribute[Any], v: object) -> None:
        if v not in choices:
            raise _fail(inst, a.name, v, "one of " + ", ".join(map(repr, choices)))

    return check


def _matches(pattern: re.Pattern[str], expected: str) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(inst: object, a: attrs.Attribute[Any], v: object) -> None:
        if not isinstance(v, str) or not pattern.match(v):
            raise _fail(inst, a.name, v, expected)

    return check


def _is_str(inst: object, a: attrs.Attribute[Any], v: object) -> None:
    if not isinstance(v, str):
        raise _fail(inst, a.name, v, "a str")


def _parsed_layout(owner: str, text: object) -> PruneSpec | None:
    """text (a prune spec in the interchange format) parsed; its errors name the field it came in (owner)."""
    if not isinstance(text, str):
        return None  # the field's validator names what is wrong
    try:
        return parse_prune_spec(text)
    except PruneSpecError as e:
        raise PruneSpecError(f"{owner} is invalid: {e}") from e


def _to_tuple(v: object) -> object:
    """Lists (as JSON gives them) become tuples so the value stays hashable and immutable."""
    if isinstance(v, (list, tuple)):
        return tuple(_to_int(x) for x in cast(Iterable[object], v))
    return v


def _to_float_tuple(v: object) -> object:
    if isinstance(v, (list, tuple)):
        items = cast(Iterable[object], v)
        return tuple(float(x) if isinstance(x, numbers.Real) and not isinstance(x, bool) else x for x in items)
    return v


@attrs.frozen(kw_only=True)
class DefaultCfg(Mapping[str, object]):
    """What a published checkpoint needs: where it lives, and how its inputs were prepared.

    Also a read-only Mapping of its fields (`cfg["mean"]`, `cfg.get("crop_pct")`, `dict(cfg)`), for code
    written against timm's dict cfgs; lists in that view are tuples, as the fields hold them.
    """

    url: str = attrs.field(default="", converter=_to_str_or_unset, validator=_is_str)
    hf_hub_id: str = attrs.field(default="", converter=_to_str_or_unset, validator=_is_str)
    file: str = attrs.field(default="", converter=_to_str_or_unset, validator=_is_str)
    sha256: str = attrs.field(
        default="", converter=_to_str_or_unset, validator=_matches(_SHA256_RE, "'' or 64 lowercase hex digits")
    )
    # torch.hub's rule for url: a file name `name-<hex>.ext` carries a sha256 prefix to check
    check_hash: bool = attrs.field(default=False, validator=_is_bool)
    num_classes: int = attrs.field(default=1000, converter=_to_int, validator=_non_negative_int)
    input_size: tuple[int, int, int] = attrs.field(default=(3, 224, 224), converter=_to_tuple, validator=_ints(3))
    test_input_size: tuple[int, int, int] | None = attrs.field(
        default=None, converter=_to_tuple, validator=_ints(3, optional=True)
    )
    fixed_input_size: bool = attrs.field(default=False, validator=_is_bool)
    pool_size: tuple[int, int] | None = attrs.field(
        default=None, converter=_to_tuple, validator=_ints(2, optional=True)
    )
    crop_pct: float = attrs.field(default=0.875, validator=_fraction())
    test_crop_pct: float | None = attrs.field(default=None, validator=_fraction(optional=True))
    crop_mode: CropMode = attrs.field(default="center", validator=_one_of(get_args(CropMode)))
    interpolation: Interpolation = attrs.field(default="bicubic", validator=_one_of(get_args(Interpolation)))
    mean: tuple[float, ...] = attrs.field(default=(0.485, 0.456, 0.406), converter=_to_float_tuple)
    std: tuple[float, ...] = attrs.field(default=(0.229, 0.224, 0.225), converter=_to_float_tuple)
    first_conv: str = attrs.field(default="", converter=_to_str_or_unset, validator=_is_str)
    classifier: str = attrs.field(default="", converter=_to_str_or_unset, validator=_is_str)
    license: str = attrs.field(default="", converter=_to_str_or_unset, validator=_is_str)
    tag: str = attrs.field(
        default="", converter=_to_str_or_unset, validator=_matches(_TAG_RE, "letters, digits, '_' or '-'")
    )

    @mean.validator
    @std.validator
    def _check_stats(self, a: attrs.Attribute[Any], v: object) -> None:
        chans = self.input_size[0]
        ok = isinstance(v, tuple) and len(v) == chans and all(isinstance(x, float) and math.isfinite(x) for x in v)
        if not ok:
            raise _fail(self, a.name, v, f"{chans} finite floats, one per input channel (input_size={self.input_size})")
        if a.name == "std" and any(x <= 0 for x in cast(tuple[float, ...], v)):
            raise _fail(self, a.name, v, "positive floats")

    def __getitem__(self, key: str) -> object:
        if not isinstance(key, str) or key not in _FIELD_NAMES:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELD_NAMES)

    def __len__(self) -> int:
        return len(_FIELD_NAMES)

    @property
    def has_weights(self) -> bool:
        """Whether this cfg names a source of weights (url, hub id or file)."""
        return bool(self.url or self.hf_hub_id or self.file)

    def copy(self) -> dict[str, object]:
        """A new, mutable dict of the fields (tuples kept), as `.copy()` of timm's dict cfgs gives.

        Change it and hand it back as create_model's pretrained_cfg, or build a cfg with DefaultCfg.from_dict.
        """
        return dict(self)

    def to_dict(self) -> dict[str, object]:
        """Plain-data form (tuples become lists), for JSON and interop."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> DefaultCfg:
        """Build from plain data, refusing keys that are not fields."""
        _check_keys(cls, data)
        return cls(**data)  # type: ignore[arg-type]  # values are checked by the field validators

    def evolve(self, overlay: Mapping[str, object]) -> DefaultCfg:
        """A copy with the overlay's fields replaced; unknown keys are refused.

        check_hash describes the url it was set for: an overlay that changes url without setting
        check_hash gets check_hash=False (the new file's name need not follow torch.hub's rule).
        """
        _check_keys(type(self), overlay)
        if "url" in overlay and "check_hash" not in overlay and _to_str_or_unset(overlay["url"]) != self.url:
            overlay = {**overlay, "check_hash": False}
        return attrs.evolve(self, **overlay)  # type: ignore[arg-type]  # values are checked by the field validators


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in attrs.fields(DefaultCfg))
# DefaultCfg's fields: its keys as a Mapping
CFG_FIELDS = _FIELD_NAMES


def _check_keys(cls: type[DefaultCfg], data: object) -> None:
    valid = [f.name for f in attrs.fields(cls)]
    if not isinstance(data, Mapping):
        raise InvalidValueError(
            f"a DefaultCfg overlay must be a mapping of field names to values, got {data!r}; "
            f"valid fields: {', '.join(valid)}"
        )
    bad = sorted((k for k in data if k not in valid), key=repr)
    if bad:
        raise InvalidValueError(f"unknown DefaultCfg field(s) {bad}; valid fields: {', '.join(valid)}")


@attrs.frozen(kw_only=True)
class FeatureInfo(Mapping[str, object]):
    """One feature tap: its position, the module producing it, its channels and stride.

    Also a read-only Mapping with timm's feature_info keys (`info["num_chs"]`, `info["reduction"]`,
    `info["module"]`), for code written against its lists of dicts; index is an attribute only.
    """

    index: int = attrs.field(validator=_non_negative_int)
    module: str = attrs.field(validator=_matches(_MODULE_RE, "a dotted module path"))
    num_chs: int = attrs.field(validator=_positive_int)
    reduction: int = attrs.field(validator=_positive_int)

    def __getitem__(self, key: str) -> object:
        if not isinstance(key, str) or key not in TAP_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(TAP_KEYS)

    def __len__(self) -> int:
        return len(TAP_KEYS)


# FeatureInfo's keys as a mapping: those of timm's feature_info dicts
TAP_KEYS: tuple[str, ...] = ("num_chs", "reduction", "module")


def _out_indices(inst: object, a: attrs.Attribute[Any], v: object) -> None:
    if v is None:
        return
    if not isinstance(v, tuple) or not v or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        raise _fail(inst, a.name, v, "a non-empty tuple of ints, or None for every tap")


@attrs.frozen(kw_only=True)
class FeatureCfg:
    """How a model becomes a feature extractor by default."""

    out_indices: tuple[int, ...] | None = attrs.field(default=None, converter=_to_tuple, validator=_out_indices)
    feature_cls: FeatureCls = attrs.field(default="list", validator=_one_of(FEATURE_CLASSES))
    flatten_sequential: bool = False


def _default_cfgs(inst: object, a: attrs.Attribute[Any], v: object) -> None:
    if not isinstance(v, tuple) or not v or not all(isinstance(c, DefaultCfg) for c in v):
        raise _fail(inst, a.name, v, "a non-empty tuple of DefaultCfg")
    tags = [c.tag for c in cast(tuple[DefaultCfg, ...], v)]
    dupes = sorted({t for t in tags if tags.count(t) > 1})
    if dupes:
        raise _fail(inst, a.name, dupes, "unique tags")


def _frozen_mapping(v: object) -> object:
    # anything but a mapping is left as given, for the field's validator to name
    return MappingProxyType(dict(cast(Mapping[str, object], v))) if isinstance(v, Mapping) else v


def _keyword_values(v: object) -> object:
    # anything but a mapping is left as given, for the field's validator to name
    if not isinstance(v, Mapping):
        return v
    return _frozen_mapping({k: plain_ints(x) for k, x in cast(Mapping[str, object], v).items()})


def _str_keys(expected: str) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(inst: object, a: attrs.Attribute[Any], v: object) -> None:
        if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
            raise _fail(inst, a.name, v, expected)

    return check


@attrs.frozen(kw_only=True)
class ModelSpec:
    """Everything needed to build one named model: constructor, arguments, cfgs, features, filters."""

    name: str = attrs.field(validator=_matches(_NAME_RE, "lowercase letters, digits and '_'"))
    family: str = attrs.field(validator=_is_str)
    constructor: ModelConstructor = attrs.field(eq=False)
    model_args: Mapping[str, object] = attrs.field(
        factory=dict, converter=_frozen_mapping, validator=_str_keys("a mapping of keyword names to values"), eq=False
    )
    default_cfgs: tuple[DefaultCfg, ...] = attrs.field(
        factory=lambda: (DefaultCfg(),), converter=_to_tuple, validator=_default_cfgs
    )
    feature_cfg: FeatureCfg = attrs.field(factory=FeatureCfg)
    pretrained_filter: CheckpointFilter | None = attrs.field(default=None, eq=False)
    # the channel layout to prune the built model to, in the `name:[shape]***...` interchange format
    prune_spec: str | None = attrs.field(default=None, validator=attrs.validators.optional(_is_str))
    # prune_spec parsed, once, when the spec is made: what the Builder prunes to
    prune_layout: PruneSpec | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "prune_layout", _parsed_layout("ModelSpec.prune_spec", self.prune_spec))

    @property
    def default_cfg(self) -> DefaultCfg:
        """The first cfg: what a name without a tag resolves to."""
        return self.default_cfgs[0]

    @property
    def tags(self) -> tuple[str, ...]:
        """Every tag with a cfg, default first."""
        return tuple(c.tag for c in self.default_cfgs)

    @property
    def has_pretrained(self) -> bool:
        """Whether any cfg names a source of weights."""
        return any(c.has_weights for c in self.default_cfgs)

    def get_cfg(self, tag: str | None = None) -> DefaultCfg:
        """The cfg of a tag (the default for None or ''), or UnknownModelError naming close tags."""
        if not tag:
            return self.default_cfg
        for cfg in self.default_cfgs:
            if cfg.tag == tag:
                return cfg
        tags = [f"{self.name}.{t}" for t in self.tags]
        raise UnknownModelError(f"{self.name}.{tag}", tags, what="tag", list_all=True)


def _num_classes(v: object) -> int | None:
    return None if v is None else check_int("num_classes", v, ge=0, le=MAX_WIDTH)


def _in_chans(v: object) -> int | None:
    return None if v is None else check_int("in_chans", v, ge=1, le=MAX_WIDTH)


def check_path(keyword: str, v: object, what: str = "a file path") -> str | None:
    """create_model's path keyword v as a str, None for None or '' (frameworks' default for 'none');
    anything else is refused, naming the keyword."""
    if v is None or v == "":
        return None
    path = os.fspath(v) if isinstance(v, (str, os.PathLike)) else None
    if path is None:
        raise InvalidValueError(f"{keyword}={v!r} is invalid: expected {what} (str or os.PathLike)")
    if not isinstance(path, str):
        raise InvalidValueError(f"{keyword}={v!r} is invalid: expected a str path, not bytes")
    return path


def _checkpoint_path(v: object) -> str | None:
    return check_path("checkpoint_path", v, "a file path")


def _cache_dir(v: object) -> str | None:
    return check_path("cache_dir", v, "a directory path")


def _optional_bool(name: str, v: object) -> None:
    if v is not None:
        check_bool(name, v)


def _keyword(check: Callable[[str, object], object]) -> Callable[[object, attrs.Attribute[Any], object], None]:
    """A validator running check on the field: a BuildRequest field is named as create_model's keyword."""

    def validate(inst: object, a: attrs.Attribute[Any], v: object) -> None:
        check(a.name, v)

    return validate


def _feature_cls(name: str, v: object) -> None:
    if v is not None and not isinstance(v, str):
        raise InvalidValueError(f"{name}={v!r} is invalid: expected one of 'list', 'dict', 'hook', 'getter', or None")


def _resolved_cfg(inst: object, a: attrs.Attribute[Any], v: object) -> None:
    if not isinstance(v, DefaultCfg):
        raise _fail(inst, a.name, v, "a DefaultCfg: the cfg of the name (tag) to build, overlay applied")


def _to_layout(v: object) -> object:
    """Spec text is parsed here, the one time it is read; a PruneSpec stays as it is."""
    return parse_prune_spec(v) if isinstance(v, str) else v


def _layout(inst: object, a: attrs.Attribute[Any], v: object) -> None:
    if v is not None and not isinstance(v, PruneSpec):
        raise PruneSpecError(f"{a.name}={v!r} is invalid: expected a PruneSpec, a spec file path or the spec text")


def _label_names(inst: object, a: attrs.Attribute[Any], v: object) -> None:
    if not isinstance(v, tuple) or not all(isinstance(x, str) for x in v):
        raise _fail(inst, a.name, v, "a tuple of str, one per class")


@attrs.frozen(kw_only=True)
class BuildRequest:
    """What a caller asked create_model for, resolved and checked once: the cfg, the options, the layout.

    Each option is checked here, its error naming create_model's keyword (the field's name); the Builder
    and the services it calls take them as they are.
    """

    # the resolved cfg: the name's tag's (or a saved model's), with pretrained_cfg_overlay applied
    cfg: DefaultCfg = attrs.field(validator=_resolved_cfg)
    pretrained: bool = attrs.field(default=False, validator=_keyword(check_bool))
    num_classes: int | None = attrs.field(default=None, converter=_num_classes)
    in_chans: int | None = attrs.field(default=None, converter=_in_chans)
    features_only: bool = attrs.field(default=False, validator=_keyword(check_bool))
    # kept as given (lists become tuples): the feature factory validates it against the model's taps
    out_indices: Sequence[int] | None = attrs.field(default=None, converter=_to_tuple)
    feature_cls: str | None = attrs.field(default=None, validator=_keyword(_feature_cls))
    # a dict extractor's output names, one per out_indices entry; the feature factory validates them
    out_map: Sequence[str] | None = attrs.field(default=None, converter=_to_tuple)
    checkpoint_path: str | None = attrs.field(default=None, converter=_checkpoint_path)
    # where this call's downloaded weights go, instead of the loader's cache (timm's cache_dir)
    cache_dir: str | None = attrs.field(default=None, converter=_cache_dir)
    # timm's layer-config switches: every zoo model scripts and exports as built, so they are checked, kept and
    # change nothing (None: not given)
    scriptable: bool | None = attrs.field(default=None, validator=_keyword(_optional_bool))
    exportable: bool | None = attrs.field(default=None, validator=_keyword(_optional_bool))
    no_jit: bool | None = attrs.field(default=None, validator=_keyword(_optional_bool))
    # the model keywords; numpy integers become plain ints here, so every constructor gets (and every
    # BuildRecord keeps) plain ones
    model_args: Mapping[str, object] = attrs.field(
        factory=dict, converter=_keyword_values, validator=_str_keys("a mapping of keyword names to values")
    )
    # the caller's channel layout, replacing the one the name is registered with (create_model's prune_spec)
    prune_spec: PruneSpec | None = attrs.field(default=None, converter=_to_layout, validator=_layout)
    # a saved model's class names; the BuildRecord keeps them while the built model has one class per name
    label_names: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple, validator=_label_names)


def _copied_dict(v: object) -> object:
    # anything but a mapping is left as given, for the field's validator to name
    return {k: _plain(x) for k, x in cast(Mapping[str, object], v).items()} if isinstance(v, Mapping) else v


def _plain(v: object) -> object:
    """numpy/torch number scalars (in lists and tuples too) as plain ints and floats: what JSON can write."""
    if type(v) is list:
        return [_plain(x) for x in cast(list[object], v)]
    if type(v) is tuple:
        return tuple(_plain(x) for x in cast(tuple[object, ...], v))
    if isinstance(v, numbers.Real) and not isinstance(v, (bool, int, float)):
        return _to_int(v) if is_int(v) else float(v)
    return v


def _layout_text(v: object) -> object:
    """A PruneSpec as its interchange text (parsed already: not read again); text is checked by parsing it."""
    if isinstance(v, PruneSpec):
        return v.to_text()
    _parsed_layout("BuildRecord.prune_spec", v)
    return v


@attrs.frozen(kw_only=True)
class BuildRecord:
    """How create_model built a model: its registered architecture, the keywords that rebuild it, its class names.

    save_pretrained writes it to config.json (`architecture`, `model_args`, `label_names`, `prune_spec`).
    """

    architecture: str = attrs.field(validator=_matches(_NAME_RE, "lowercase letters, digits and '_'"))
    # keywords as given to create_model (num_classes and in_chans as built); a fresh dict, so copies stay apart
    model_args: dict[str, object] = attrs.field(
        factory=dict, converter=_copied_dict, validator=_str_keys("a mapping of keyword names to values"), hash=False
    )
    label_names: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple, validator=_label_names)
    # the caller's channel layout (create_model's prune_spec, interchange text); None: the architecture's own
    prune_spec: str | None = attrs.field(
        default=None, converter=_layout_text, validator=attrs.validators.optional(_is_str)
    )
