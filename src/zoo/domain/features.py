"""Feature taps as pure values: which taps an out_indices request selects, and how to name them."""

from __future__ import annotations

import numbers
import operator
from collections.abc import Sequence
from typing import SupportsIndex, cast

from zoo.domain.errors import InvalidFeatureRequestError
from zoo.domain.values import FeatureInfo

__all__ = ["describe_taps", "take_indices", "tap_positions"]


def describe_taps(feature_info: Sequence[FeatureInfo]) -> str:
    """The valid index range and the tap modules, for error messages."""
    n = len(feature_info)
    taps = ", ".join(f"{i}={t.module}" for i, t in enumerate(feature_info))
    return f"valid indices are 0..{n - 1} (or -{n}..-1 counting from the last tap); taps: {taps}"


def take_indices(
    feature_info: Sequence[FeatureInfo],
    indices: int | Sequence[int] | None,
    *,
    name: str = "out_indices",
    allow_count: bool = False,
) -> tuple[int, ...]:
    """Tap positions in network order: None selects every tap, negatives count from the last.

    With allow_count, an int n selects the last n taps (1 <= n <= the number of taps). Empty,
    out-of-range, duplicate (after normalisation) or non-integer indices raise
    InvalidFeatureRequestError naming the argument (name), the valid range and the tap modules.
    """
    n = len(feature_info)
    if indices is None:
        return tuple(range(n))

    def refuse(reason: str) -> InvalidFeatureRequestError:
        return InvalidFeatureRequestError(f"{name}={indices!r} is invalid: {reason}; {describe_taps(feature_info)}")

    if allow_count and not isinstance(indices, bool) and isinstance(indices, numbers.Integral):
        count = int(indices)
        if not 1 <= count <= n:
            raise refuse(f"an int counts the last taps to take, from 1 to {n}")
        return tuple(range(n - count, n))
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence):
        raise refuse("expected an int or a sequence of ints" if allow_count else "expected a sequence of ints")
    if not indices:
        raise refuse("it selects no tap")
    taken: list[int] = []
    for raw in indices:
        # operator.index accepts numpy/torch integer scalars but not floats; bools are ints we refuse
        try:
            if isinstance(raw, bool):
                raise TypeError
            i = operator.index(raw)
        except TypeError:
            raise refuse(f"{raw!r} is not an int") from None
        if not -n <= i < n:
            raise refuse(f"{i} is out of range")
        taken.append(i % n)
    dupes = sorted({i for i in taken if taken.count(i) > 1})
    if dupes:
        raise refuse(f"tap(s) {dupes} selected more than once")
    return tuple(sorted(taken))


def tap_positions(count: int, idx: int | Sequence[int] | None) -> int | tuple[int, ...]:
    """Positions among count taps for a feature_info accessor's idx (timm's channels(idx) and kin).

    An int gives one position (negatives count from the end), a sequence several in the order given, None
    all; anything else, or a position out of range, raises InvalidFeatureRequestError naming the range.
    """
    if idx is None:
        return tuple(range(count))

    def one(raw: object) -> int:
        try:
            if isinstance(raw, bool):
                raise TypeError
            i = operator.index(cast(SupportsIndex, raw))  # anything else raises TypeError: not an int
        except TypeError:
            raise InvalidFeatureRequestError(
                f"idx={idx!r} is invalid: {raw!r} is not an int; expected an int, a sequence of ints or None"
            ) from None
        if not -count <= i < count:
            raise InvalidFeatureRequestError(
                f"idx={idx!r} is invalid: {i} is out of range; there are {count} taps (0..{count - 1}, or -{count}..-1)"
            )
        return i % count

    if isinstance(idx, (str, bytes)) or not isinstance(idx, (Sequence, numbers.Integral)):
        raise InvalidFeatureRequestError(f"idx={idx!r} is invalid: expected an int, a sequence of ints or None")
    if isinstance(idx, Sequence):
        return tuple(one(i) for i in idx)
    return one(idx)
