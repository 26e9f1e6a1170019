"""The names a run draws for the drawn tier: every family in every run, every name within R consecutive seeds.

A pure function of the run's seed and the registered names, so every pytest-xdist worker draws alike and
`make unit SEED=N` draws what the run with seed N drew.

The rule: R = runs_for(names) = max(MIN_RUNS, ceil(names / PER_SLOT)) slots, so that a run's cost stays
the same as the zoo grows (at 1,000 names R is 100). A seed's slot is seed mod R. Each family's members,
sorted by name, are dealt into R slots in turn (member i into slot i mod R); a family with fewer members
than R gives its member seed mod (its size) instead, so no slot leaves it out and consecutive seeds draw
its members in turn. A run draws its slot's members of every family: at most PER_SLOT names plus one
per family. Any R consecutive seeds
visit every slot, so they draw every name at least once; a random seed draws a given name with
probability at least 1 / R.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

MIN_RUNS = 12
PER_SLOT = 10  # names a slot holds beyond one per small family: the drawn tier's size, whatever the zoo's
FALLBACK_SEED = 0  # the seed without --hypothesis-seed (a bare `pytest`): every process must draw alike


def runs_for(names: int) -> int:
    """How many slots names registered names are dealt into: any that many consecutive seeds draw every name."""
    return max(MIN_RUNS, math.ceil(names / PER_SLOT))


def seed_number(seed: object) -> int:
    """The run's seed as a number: a decimal seed as itself, any other text by its hash; None is FALLBACK_SEED."""
    if seed is None:
        return FALLBACK_SEED
    text = str(seed).strip()
    if text.isdecimal():
        return int(text)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def slot(seed: object, runs: int) -> int:
    """Which of the runs slots a seed draws."""
    return seed_number(seed) % runs


def runs_of(families: Mapping[str, Sequence[str]]) -> int:
    """runs_for the number of names in families."""
    return runs_for(sum(len(members) for members in families.values()))


def drawn(families: Mapping[str, Sequence[str]], seed: object) -> list[str]:
    """The names a run with seed draws: its slot's members of every family (see the module docstring), sorted."""
    runs = runs_of(families)
    number = seed_number(seed)
    s = number % runs
    names: list[str] = []
    for members in families.values():
        ordered = sorted(members)
        if not ordered:
            continue
        names.extend(ordered[s::runs] if len(ordered) > runs else [ordered[number % len(ordered)]])
    return sorted(names)
