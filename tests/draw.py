"""The names a run draws for the drawn tier: every family in every run, every name within RUNS consecutive seeds.

A pure function of the run's seed and the registered names, so every pytest-xdist worker draws alike and
`make unit SEED=N` draws what the run with seed N drew.

The rule: a seed's slot is seed mod RUNS. Each family's members, sorted by name, are dealt into RUNS
slots in turn (member i into slot i mod RUNS); a family with fewer members than RUNS gives its member
slot mod (its size) instead, so no slot leaves a family out. A run draws its slot's members of every
family: about (names / RUNS) + one per family. Any RUNS consecutive seeds visit every slot, so they draw
every name at least once; a random seed draws a given name with probability at least 1 / RUNS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

RUNS = 12
FALLBACK_SEED = 0  # the seed without --hypothesis-seed (a bare `pytest`): every process must draw alike


def seed_number(seed: object) -> int:
    """The run's seed as a number: a decimal seed as itself, any other text by its hash; None is FALLBACK_SEED."""
    if seed is None:
        return FALLBACK_SEED
    text = str(seed).strip()
    if text.isdecimal():
        return int(text)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def slot(seed: object, runs: int = RUNS) -> int:
    """Which of the runs slots a seed draws."""
    return seed_number(seed) % runs


def drawn(families: Mapping[str, Sequence[str]], seed: object, runs: int = RUNS) -> list[str]:
    """The names a run with seed draws: its slot's members of every family (see the module docstring), sorted."""
    s = slot(seed, runs)
    names: list[str] = []
    for members in families.values():
        ordered = sorted(members)
        if not ordered:
            continue
        names.extend(ordered[s::runs] if len(ordered) > runs else [ordered[s % len(ordered)]])
    return sorted(names)
