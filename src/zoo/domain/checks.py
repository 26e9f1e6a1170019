"""Argument checks shared by the facade and the architectures: one rule per kind of value.

Integers are `numbers.Integral` that is not bool (numpy and torch integer scalars pass, floats and
bools do not); real numbers are `numbers.Real` that is not bool and is finite. Every failure is an
InvalidValueError naming the argument, the value and what would be valid.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Collection, Sequence
from typing import SupportsIndex, cast

from zoo.domain.errors import InvalidValueError

__all__ = [
    "MAX_WIDTH",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_ints",
    "is_int",
    "plain_ints",
]


# The largest class count, channel count or width zoo accepts: torch sizes past int32 are not practical.
MAX_WIDTH = 2**31 - 1


def is_int(value: object) -> bool:
    """Whether value counts as an int here: numbers.Integral, and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _range_text(low: float | None, high: float | None, *, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in [{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f">= {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def check_int(name: str, value: object, *, ge: int | None = None, le: int | None = None) -> int:
    """value as a plain int, or InvalidValueError naming name and the valid range."""
    rng = _range_text(ge, le)
    expected = f"an int {rng}".strip()
    if not is_int(value):
        raise InvalidValueError(f"{name}={value!r} is invalid: expected {expected}")
    v = operator.index(cast(SupportsIndex, value))
    if (ge is not None and v < ge) or (le is not None and v > le):
        raise InvalidValueError(f"{name}={value!r} is invalid: expected {expected}")
    return v


def check_float(
    name: str,
    value: object,
    *,
    ge: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> float:
    """value as a finite float within the bounds (lt is an open upper bound), else InvalidValueError."""
    high, high_open = (lt, True) if lt is not None else (le, False)
    expected = f"a finite number {_range_text(ge, high, high_open=high_open)}".strip()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise InvalidValueError(f"{name}={value!r} is invalid: expected {expected}")
    v = float(value)
    bad = not math.isfinite(v) or (ge is not None and v < ge)
    bad = bad or (le is not None and v > le) or (lt is not None and v >= lt)
    if bad:
        raise InvalidValueError(f"{name}={value!r} is invalid: expected {expected}")
    return v


def check_bool(name: str, value: object) -> bool:
    """value if it is a real bool (not a truthy string or int), else InvalidValueError."""
    if not isinstance(value, bool):
        raise InvalidValueError(f"{name}={value!r} is invalid: expected True or False")
    return value


def plain_ints(value: object) -> object:
    """value with every integer that is not a plain int (numpy's, torch's) made one, in lists and tuples too.

    What a model is built with ends in its BuildRecord and config.json: plain ints keep both portable.
    """
    if is_int(value) and type(value) is not int:
        return operator.index(cast(SupportsIndex, value))
    if type(value) is list:  # exactly a list or tuple: a subclass (a namedtuple) may need its own fields
        return [plain_ints(v) for v in cast(list[object], value)]
    if type(value) is tuple:
        return tuple(plain_ints(v) for v in cast(tuple[object, ...], value))
    return value


def check_choice(name: str, value: object, choices: Collection[object]) -> object:
    """value if it is one of choices (compared by equality and type), else InvalidValueError listing them.

    Any integer (numpy's too, not bool) matches an int choice of its value and comes back as a plain int.
    """
    plain = plain_ints(value) if is_int(value) else value
    if not any(type(plain) is type(c) and plain == c for c in choices):
        listed = ", ".join(repr(c) for c in choices)
        raise InvalidValueError(f"{name}={value!r} is invalid: expected one of {listed}")
    return plain


def check_ints(
    name: str, value: object, *, length: int | None = None, ge: int | None = None, le: int | None = None
) -> tuple[int, ...]:
    """A sequence of ints (not a str) of the given length and bounds, as a tuple; else InvalidValueError."""
    count = f"{length} " if length is not None else ""
    rng = _range_text(ge, le)
    expected = f"a sequence of {count}ints{' ' + rng if rng else ''}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidValueError(f"{name}={value!r} is invalid: expected {expected}")
    if length is not None and len(value) != length:
        raise InvalidValueError(f"{name}={value!r} is invalid: expected {expected}")
    items: list[int] = []
    for item in value:
        if not is_int(item):
            raise InvalidValueError(f"{name}={value!r} is invalid: expected {expected}")
        v = operator.index(cast(SupportsIndex, item))
        if (ge is not None and v < ge) or (le is not None and v > le):
            raise InvalidValueError(f"{name}={value!r} is invalid: expected {expected}")
        items.append(v)
    return tuple(items)
