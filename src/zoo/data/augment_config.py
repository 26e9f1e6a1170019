"""The auto_augment strings of the reference (timm), parsed into checked values: RandAugment, AugMix, TrivialAugment.

Pure values: importing this module imports neither torch nor torchvision. The grammar is the reference's:
sections joined by '-', the first naming the kind, each other a key followed by its value.

- `rand-m9-n2-mstd0.5-mmax10-inc1-p0.5` (RandAugment): m magnitude (int, default 10), n ops per image
  (int, 2), p probability of applying each op (0.5), mstd std of the Gaussian noise added to the magnitude
  (0; over 100 means uniform in [0, m]), mmax the magnitude's upper clip (int, 10), inc 1 for the ops
  whose strength increases with the magnitude (0).
- `augmix-m3-w3-a1` (AugMix): m severity (int 1..10, default 3), w chains (3), d ops per chain
  (-1: 1 to 3 at random), a the Dirichlet/Beta alpha (1.0).
- `trivialaugment` (TrivialAugment Wide), no sections.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TypeAlias, TypeVar

import attrs

from zoo.domain.errors import FeatureNotAvailableError, InvalidValueError

__all__ = ["AugMixSpec", "AutoAugmentSpec", "RandAugmentSpec", "TrivialAugmentSpec", "parse_auto_augment"]

_KINDS = "'rand-m9-mstd0.5' (RandAugment), 'augmix' or 'augmix-m5-w4-d2' (AugMix), 'trivialaugment'"
# the reference's AutoAugment policies and RandAugment op sets, which zoo does not build
_POLICIES = ("original", "originalr", "v0", "v0r", "3a")
_SECTION = re.compile(r"(?P<key>[a-z]+)(?P<value>.*)")
_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class RandAugmentSpec:
    """RandAugment as the reference runs it: n ops drawn per image, each applied with probability p.

    Each op's magnitude is `magnitude` plus Gaussian noise of std `magnitude_std` (uniform in [0,
    magnitude] when it is infinite), clipped to [0, magnitude_max]; a magnitude of 10 is each op's full
    strength. increasing picks the op variants whose strength grows with the magnitude.
    """

    magnitude: int = 10
    num_ops: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: int = 10
    increasing: bool = False


@attrs.frozen(kw_only=True)
class AugMixSpec:
    """AugMix: width chains of depth ops (-1: 1 to 3 at random) at severity 1..10, mixed with Dirichlet(alpha)."""

    severity: int = 3
    width: int = 3
    depth: int = -1
    alpha: float = 1.0


@attrs.frozen
class TrivialAugmentSpec:
    """TrivialAugment Wide: one op per image at a magnitude drawn uniformly."""


AutoAugmentSpec: TypeAlias = RandAugmentSpec | AugMixSpec | TrivialAugmentSpec


def _bad(text: str, why: str) -> InvalidValueError:
    return InvalidValueError(f"auto_augment={text!r} is invalid: {why}")


def _number(text: str, key: str, raw: str, kind: Callable[[str], _T], expected: str) -> _T:
    try:
        return kind(raw)
    except ValueError:
        raise _bad(text, f"section {key + raw!r} needs {expected} after {key!r}") from None


def _sections(text: str, kind: str) -> list[tuple[str, str]]:
    out = []
    rest = text[len(kind) :]
    # the reference splits on '-', so a negative value ('d-1') arrives as its own section: join it back
    parts = re.split(r"-(?=[a-z])", rest[1:]) if rest else []
    for part in parts:
        if kind == "rand" and part.startswith("t"):  # the reference's op-set section: 't' and a name
            out.append(("t", part[1:]))
            continue
        match = _SECTION.fullmatch(part)
        if match is None or not match["value"]:
            raise _bad(text, f"section {part!r} is not a key followed by its value (as 'm9' or 'mstd0.5')")
        out.append((match["key"], match["value"]))
    return out


def _rand(text: str) -> RandAugmentSpec:
    spec = RandAugmentSpec()
    for key, raw in _sections(text, "rand"):
        if key.startswith("t"):
            raise FeatureNotAvailableError(
                f"auto_augment={text!r}: the reference's RandAugment op sets ('t{raw}') are not built by zoo; "
                "use the default set, or inc1 for the increasing one"
            )
        if key == "m":
            spec = attrs.evolve(spec, magnitude=_number(text, key, raw, int, "an int >= 0"))
        elif key == "n":
            spec = attrs.evolve(spec, num_ops=_number(text, key, raw, int, "an int >= 0"))
        elif key == "p":
            spec = attrs.evolve(spec, prob=_number(text, key, raw, float, "a probability in [0, 1]"))
        elif key == "mstd":
            std = _number(text, key, raw, float, "a number >= 0")
            spec = attrs.evolve(spec, magnitude_std=math.inf if std > 100 else std)
        elif key == "mmax":
            spec = attrs.evolve(spec, magnitude_max=_number(text, key, raw, int, "an int >= 1"))
        elif key == "inc":
            inc = _number(text, key, raw, int, "0 or 1")
            if inc not in (0, 1):
                raise _bad(text, f"section {key + raw!r} needs 0 or 1 after 'inc'")
            spec = attrs.evolve(spec, increasing=bool(inc))
        else:
            raise _bad(
                text,
                f"unknown RandAugment section {key + raw!r}; valid keys: m (magnitude), n (ops per image), "
                "p (probability of each op), mstd (magnitude noise std), mmax (magnitude clip), inc (0 or 1)",
            )
    checks = (
        ("m", spec.magnitude >= 0, "an int >= 0"),
        ("n", spec.num_ops >= 0, "an int >= 0"),
        ("p", 0.0 <= spec.prob <= 1.0, "a probability in [0, 1]"),
        ("mstd", spec.magnitude_std >= 0, "a number >= 0"),
        ("mmax", spec.magnitude_max >= 1, "an int >= 1"),
    )
    for key, ok, expected in checks:
        if not ok:
            raise _bad(text, f"{key} must be {expected}")
    return spec


def _augmix(text: str) -> AugMixSpec:
    mix = AugMixSpec()
    for key, raw in _sections(text, "augmix"):
        if key == "m":
            mix = attrs.evolve(mix, severity=_number(text, key, raw, int, "an int in [1, 10]"))
        elif key == "w":
            mix = attrs.evolve(mix, width=_number(text, key, raw, int, "an int >= 1"))
        elif key == "d":
            mix = attrs.evolve(mix, depth=_number(text, key, raw, int, "-1 or an int >= 1"))
        elif key == "a":
            mix = attrs.evolve(mix, alpha=_number(text, key, raw, float, "a number > 0"))
        elif key == "b" and raw == "0":
            continue  # the reference's default: each chain mixed, then blended once
        elif key == "mstd" and _number(text, key, raw, float, "a number >= 0") > 100:
            continue  # uniform magnitudes: the reference's default for AugMix, and what zoo's AugMix does
        elif key in ("b", "mstd"):
            raise FeatureNotAvailableError(
                f"auto_augment={text!r}: AugMix's {key + raw!r} is not built by zoo (its AugMix draws each op's "
                "magnitude uniformly and blends once, the reference's defaults); leave the section out"
            )
        else:
            raise _bad(
                text,
                f"unknown AugMix section {key + raw!r}; valid keys: m (severity 1..10), w (width), "
                "d (depth, -1 for 1 to 3 at random), a (alpha)",
            )
    checks = (
        ("m", 1 <= mix.severity <= 10, "an int in [1, 10]"),
        ("w", mix.width >= 1, "an int >= 1"),
        ("d", mix.depth == -1 or mix.depth >= 1, "-1 or an int >= 1"),
        ("a", mix.alpha > 0 and math.isfinite(mix.alpha), "a finite number > 0"),
    )
    for key, ok, expected in checks:
        if not ok:
            raise _bad(text, f"{key} must be {expected}")
    return mix


def parse_auto_augment(text: object) -> AutoAugmentSpec:
    """The augmentation an auto_augment string names (the reference's grammar; see this module's docstring)."""
    if not isinstance(text, str) or not text:
        raise InvalidValueError(f"auto_augment={text!r} is invalid: expected a string, one of {_KINDS}")
    kind = text.split("-", 1)[0]
    if kind == "rand":
        return _rand(text)
    if kind == "augmix":
        return _augmix(text)
    if text == "trivialaugment":
        return TrivialAugmentSpec()
    if kind in _POLICIES:
        raise FeatureNotAvailableError(
            f"auto_augment={text!r}: the reference's AutoAugment policies ({', '.join(_POLICIES)}) are not built "
            f"by zoo; supported: {_KINDS}"
        )
    raise _bad(text, f"expected one of {_KINDS}")
