"""Feature taps as pure values: which taps an out_indices request selects, and how to name them."""

from __future__ import annotations

import numbers
import operator
from collections.abc import Iterator, Sequence
from typing import SupportsIndex, cast, overload

import attrs

from zoo.domain.errors import InvalidFeatureRequestError, InvalidValueError
from zoo.domain.values import TAP_KEYS, FeatureInfo

__all__ = ["FeatureTaps", "describe_taps", "take_indices", "tap_positions"]


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


@attrs.frozen
class FeatureTaps:
    """A feature extractor's feature_info: every tap the model offers and the ones selected."""

    available: tuple[FeatureInfo, ...]
    out_indices: tuple[int, ...]

    def taps(self) -> tuple[FeatureInfo, ...]:
        """The selected taps, in network order."""
        return tuple(self.available[i] for i in self.out_indices)

    @overload
    def channels(self, idx: None = None) -> list[int]: ...
    @overload
    def channels(self, idx: int) -> int: ...
    @overload
    def channels(self, idx: Sequence[int]) -> list[int]: ...
    def channels(self, idx: int | Sequence[int] | None = None) -> int | list[int]:
        """Channels per selected tap; idx: one position among them (negatives from the end) or several."""
        return cast("int | list[int]", self.get("num_chs", idx))

    @overload
    def reduction(self, idx: None = None) -> list[int]: ...
    @overload
    def reduction(self, idx: int) -> int: ...
    @overload
    def reduction(self, idx: Sequence[int]) -> list[int]: ...
    def reduction(self, idx: int | Sequence[int] | None = None) -> int | list[int]:
        """Stride (input size / output size) per selected tap; idx as for channels."""
        return cast("int | list[int]", self.get("reduction", idx))

    @overload
    def module_name(self, idx: None = None) -> list[str]: ...
    @overload
    def module_name(self, idx: int) -> str: ...
    @overload
    def module_name(self, idx: Sequence[int]) -> list[str]: ...
    def module_name(self, idx: int | Sequence[int] | None = None) -> str | list[str]:
        """Dotted module path (in the classifier model) per selected tap; idx as for channels."""
        return cast("str | list[str]", self.get("module", idx))

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> object:
        """One key (num_chs, reduction, module) of the taps at idx: a value for an int, else a list of them."""
        if key not in TAP_KEYS:
            raise InvalidValueError(f"key={key!r} is invalid: expected one of {', '.join(map(repr, TAP_KEYS))}")
        picked = tap_positions(len(self), idx)
        taps = self.taps()
        return taps[picked][key] if isinstance(picked, int) else [taps[i][key] for i in picked]

    def get_dicts(
        self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None
    ) -> dict[str, object] | list[dict[str, object]]:
        """The taps at idx as dicts of keys (every key by default): one dict for an int idx, else a list."""
        wanted = TAP_KEYS if keys is None else tuple(keys)
        bad = [k for k in wanted if k not in TAP_KEYS]
        if bad or isinstance(keys, str):
            expected = ", ".join(map(repr, TAP_KEYS))
            raise InvalidValueError(f"keys={keys!r} is invalid: expected a sequence of {expected}")
        picked = tap_positions(len(self), idx)
        taps = self.taps()
        if isinstance(picked, int):
            return {k: taps[picked][k] for k in wanted}
        return [{k: taps[i][k] for k in wanted} for i in picked]

    def __len__(self) -> int:
        return len(self.out_indices)

    def __iter__(self) -> Iterator[FeatureInfo]:
        return iter(self.taps())

    def __getitem__(self, i: int) -> FeatureInfo:
        return self.taps()[i]
