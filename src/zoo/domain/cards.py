"""Model cards: what the publisher of a model's weights measured for them, as frozen values, and the
search over them (filters and sort orders). Pure values: the published tables are read elsewhere."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, get_args

import attrs

from zoo.domain.checks import check_choice, check_float, check_int
from zoo.domain.errors import InvalidValueError

__all__ = [
    "SORT_KEYS",
    "CostRow",
    "ModelCard",
    "ResultRow",
    "SearchFilter",
    "SortKey",
    "parse_costs",
    "parse_results",
]

SortKey = Literal["top1", "params", "gmacs"]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)


def _optional_number(low: float, high: float | None = None) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            check_float(attribute.name, value, ge=low, le=high)

    return check


def _text(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise InvalidValueError(f"{attribute.name}={value!r} is invalid: expected a str")


def _size(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_int(attribute.name, value, ge=1)


@attrs.frozen(kw_only=True)
class ModelCard:
    """One weight set (NAME.TAG) at one image size: the publisher's ImageNet-1k accuracy and cost figures.

    top1/top5 (percent), params_m (millions of parameters), gmacs (billions of multiply-accumulates per image)
    and activations_m (millions) are the reference library's published measurements, None where it published
    none; license and source (hf-hub:ID or the weights' url, "" for none) come from the tag's cfg.
    """

    name: str = attrs.field(validator=_text)
    tag: str = attrs.field(validator=_text)
    img_size: int = attrs.field(validator=_size)
    top1: float | None = attrs.field(default=None, validator=_optional_number(0.0, 100.0))
    top5: float | None = attrs.field(default=None, validator=_optional_number(0.0, 100.0))
    params_m: float | None = attrs.field(default=None, validator=_optional_number(0.0))
    gmacs: float | None = attrs.field(default=None, validator=_optional_number(0.0))
    activations_m: float | None = attrs.field(default=None, validator=_optional_number(0.0))
    crop_pct: float | None = attrs.field(default=None, validator=_optional_number(0.0, 1.0))
    license: str = attrs.field(default="", validator=_text)
    source: str = attrs.field(default="", validator=_text)

    @property
    def full_name(self) -> str:
        """NAME.TAG, or NAME for a name without tags."""
        return f"{self.name}.{self.tag}" if self.tag else self.name

    def figure(self, key: SortKey) -> float | None:
        """The figure a sort key names: top1, params_m (params) or gmacs."""
        return {"top1": self.top1, "params": self.params_m, "gmacs": self.gmacs}[key]

    def to_dict(self) -> dict[str, object]:
        """The card's fields as a plain dict (JSON-ready)."""
        return attrs.asdict(self)


def _sort_key(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_choice(attribute.name, value, SORT_KEYS)


@attrs.frozen(kw_only=True)
class SearchFilter:
    """What a search keeps and how it orders it: bounds in the cards' units, a sort key (None: name order)."""

    sort: SortKey | None = attrs.field(default=None, validator=_sort_key)
    max_params: float | None = attrs.field(default=None, validator=_optional_number(0.0))  # millions
    min_top1: float | None = attrs.field(default=None, validator=_optional_number(0.0, 100.0))  # percent
    max_gmacs: float | None = attrs.field(default=None, validator=_optional_number(0.0))
    img_size: int | None = attrs.field(default=None, validator=attrs.validators.optional(_size))

    def keeps(self, card: ModelCard) -> bool:
        """Whether card passes every bound; a card without a figure a bound or the sort needs is not kept."""
        if self.img_size is not None and (card.img_size != self.img_size or (card.top1, card.gmacs) == (None, None)):
            return False
        # (bound, figure, sign): a figure passes when sign * figure <= sign * bound
        checks = (
            (self.max_params, card.params_m, 1.0),
            (self.min_top1, card.top1, -1.0),
            (self.max_gmacs, card.gmacs, 1.0),
        )
        for bound, value, sign in checks:
            if bound is not None and (value is None or sign * value > sign * bound):
                return False
        return self.sort is None or card.figure(self.sort) is not None

    def apply(self, cards: Iterable[ModelCard]) -> list[ModelCard]:
        """The cards kept, sorted by the sort key (top1 best first; params and gmacs smallest first)."""
        kept = [c for c in cards if self.keeps(c)]
        if self.sort is not None:
            key = self.sort
            sign = -1.0 if key == "top1" else 1.0
            kept.sort(key=lambda c: sign * (c.figure(key) or 0.0))  # stable: ties keep the name order
        return kept


@attrs.frozen
class ResultRow:
    """One published ImageNet-1k evaluation of a weight set."""

    img_size: int
    top1: float
    top5: float
    params_m: float
    crop_pct: float


@attrs.frozen
class CostRow:
    """One published inference cost of an architecture at one image size."""

    params_m: float
    gmacs: float
    activations_m: float


def _number(text: str, where: str) -> float:
    try:
        value = float(text.replace(",", ""))  # "1,014.45": the publisher groups thousands
    except ValueError:
        raise InvalidValueError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidValueError(f"{where}: {text!r} is not a finite number")
    return value


def _rows(text: str, columns: tuple[str, ...], what: str) -> Iterable[tuple[int, Mapping[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in columns if c not in (reader.fieldnames or ())]
    if missing:
        raise InvalidValueError(f"{what} lacks the columns {missing}; it has {reader.fieldnames}")
    yield from enumerate(reader, start=2)


def parse_results(text: str) -> dict[str, tuple[ResultRow, ...]]:
    """imagenet-results.csv's text as NAME.TAG -> its evaluations, in the file's order (best first)."""
    columns = ("model", "img_size", "top1", "top5", "param_count_m", "crop_pct")
    out: dict[str, list[ResultRow]] = {}
    for line, row in _rows(text, columns, "imagenet-results.csv"):
        where = f"imagenet-results.csv line {line}"
        out.setdefault(row["model"], []).append(
            ResultRow(
                int(_number(row["img_size"], where)),
                _number(row["top1"], where),
                _number(row["top5"], where),
                _number(row["param_count_m"], where),
                _number(row["crop_pct"], where),
            )
        )
    return {k: tuple(v) for k, v in out.items()}


def parse_costs(text: str) -> dict[tuple[str, int], CostRow]:
    """inference-cost.csv's text as (NAME, image size) -> its cost."""
    columns = ("model", "img_size", "param_count_m", "gmacs", "macts_m")
    out: dict[tuple[str, int], CostRow] = {}
    for line, row in _rows(text, columns, "inference-cost.csv"):
        where = f"inference-cost.csv line {line}"
        key = (row["model"], int(_number(row["img_size"], where)))
        out[key] = CostRow(
            _number(row["param_count_m"], where), _number(row["gmacs"], where), _number(row["macts_m"], where)
        )
    return out
