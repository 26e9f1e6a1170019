"""Parameter groups by name: a family's rules (GroupMatcher) and the one function that applies them.

A model's group_matcher(coarse) says which parameters belong together (the stem, each block or each
stage, the head) and in which order, from input to output; layer-wise learning-rate decay scales each
group's rate by its position, and zoo.optim turns the groups into torch.optim parameter groups.

How names become groups (the reference library's rules, so the same model name gives the same groups):
each parameter name gets a sort key from the first rule, in declaration order, whose pattern matches
at the start of the name: (the position of the rule's group in the matcher, the numbers the pattern
captures, the rule's suffix), and a final JOINS_PREVIOUS for a rule that joins the group before it.
A name no rule matches gets the key (inf,): the head, after everything else. The distinct keys,
sorted, are the groups in order, except that a key ending in JOINS_PREVIOUS adds its parameters to
the group before it (a stage's transition joins the stage's last block).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import cast

import attrs

from zoo.domain.errors import InvalidValueError

__all__ = ["JOINS_PREVIOUS", "GroupMatcher", "GroupRule", "group_names"]

# the last element of a key whose parameters join the group sorted before them; the reference library's
# value, so that a GroupMatcher called as a function gives the keys that library's grouping expects
JOINS_PREVIOUS = 99999


def _is_pattern(inst: GroupRule, a: attrs.Attribute[str], v: object) -> None:
    if not isinstance(v, str):
        raise InvalidValueError(f"GroupRule.{a.name}={v!r} is invalid: expected a regular expression string")
    try:
        re.compile(v)
    except re.error as e:
        raise InvalidValueError(f"GroupRule.{a.name}={v!r} is invalid: not a regular expression ({e})") from None


def _int_tuple(v: object) -> tuple[int, ...]:
    if not isinstance(v, Sequence) or isinstance(v, str) or not all(type(i) is int for i in v):
        raise InvalidValueError(f"GroupRule.suffix={v!r} is invalid: expected a tuple of ints")
    return tuple(v)


def _is_bool(inst: GroupRule, a: attrs.Attribute[bool], v: object) -> None:
    if not isinstance(v, bool):
        raise InvalidValueError(f"GroupRule.{a.name}={v!r} is invalid: expected True or False")


@attrs.frozen
class GroupRule:
    """One pattern of a group: names it matches (at their start) sort by its captured numbers, then suffix.

    joins_previous: the matched parameters join the group sorted just before them instead of starting
    their own (a transition layer joining the last block of its stage).
    """

    pattern: str = attrs.field(validator=_is_pattern)
    suffix: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)
    joins_previous: bool = attrs.field(default=False, validator=_is_bool)

    def key(self, ordinal: int, name: str) -> tuple[float, ...] | None:
        """name's sort key when this rule (of the matcher's group at ordinal) matches it, else None."""
        found = re.match(self.pattern, name)  # re keeps the compiled patterns it has seen
        if found is None:
            return None
        captured = tuple(float(g) for g in found.groups() if g is not None)
        tail = (float(JOINS_PREVIOUS),) if self.joins_previous else ()
        return (float(ordinal), *captured, *map(float, self.suffix), *tail)


def _rules(v: object) -> tuple[tuple[str, tuple[GroupRule, ...]], ...]:
    expected = "a sequence of (group name, rules) pairs, each rule a GroupRule"
    if not isinstance(v, Sequence):
        raise InvalidValueError(f"GroupMatcher.groups={v!r} is invalid: expected {expected}")
    out: list[tuple[str, tuple[GroupRule, ...]]] = []
    for item in v:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise InvalidValueError(f"GroupMatcher.groups={v!r} is invalid: expected {expected}")
        rules = tuple(cast(Iterable[object], item[1])) if isinstance(item[1], Iterable) else ()
        if not rules or not all(isinstance(r, GroupRule) for r in rules):
            raise InvalidValueError(f"GroupMatcher.groups={v!r} is invalid: expected {expected}")
        out.append((item[0], cast(tuple[GroupRule, ...], rules)))
    return tuple(out)


@attrs.frozen
class GroupMatcher:
    """A model's parameter-grouping rules: named groups in order (stem, blocks, ...), each a few GroupRules.

    Called with a parameter name it gives that name's sort key (see the module docstring), which is
    also what the reference library's group_parameters accepts as a matcher function.
    """

    groups: tuple[tuple[str, tuple[GroupRule, ...]], ...] = attrs.field(converter=_rules)

    @classmethod
    def of(cls, **groups: str | Sequence[GroupRule]) -> GroupMatcher:
        """A matcher from keyword groups in order; a plain string is one rule with that pattern."""
        return cls(tuple((k, (GroupRule(v),) if isinstance(v, str) else tuple(v)) for k, v in groups.items()))

    def __call__(self, name: str) -> tuple[float, ...]:
        """name's sort key: from the first rule that matches it, or (inf,) when none does."""
        for ordinal, (_, rules) in enumerate(self.groups):
            for rule in rules:
                key = rule.key(ordinal, name)
                if key is not None:
                    return key
        return (math.inf,)


def group_names(names: Iterable[str], matcher: GroupMatcher) -> list[list[str]]:
    """names split into matcher's groups, in group order (each keeps names' order): group i is layer id i."""
    keyed = [(name, matcher(name)) for name in names]
    group_of: dict[tuple[float, ...], int] = {}
    count = 0
    for key in sorted({key for _, key in keyed}):
        if count == 0 or key[-1] != JOINS_PREVIOUS:
            count += 1
        group_of[key] = count - 1
    groups: list[list[str]] = [[] for _ in range(count)]
    for name, key in keyed:
        groups[group_of[key]].append(name)
    return groups
