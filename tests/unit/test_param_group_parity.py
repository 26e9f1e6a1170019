"""Every registered name groups its parameters as the reference does (tests/facts/param_groups.json).

The facts come from tools/extract_param_groups.py, run by hand against timm 1.0.31: per name and coarse
flag, each parameter's group as runs over named_parameters order, and no_weight_decay()'s names.
Models are built on the meta device, so checking every name is cheap. Also here: the grouping rules
themselves (zoo.domain.grouping), on names alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

import zoo
from model_checks import meta_model
from zoo.archs.base import ZooModule
from zoo.domain import InvalidValueError
from zoo.domain.grouping import JOINS_PREVIOUS, GroupMatcher, GroupRule, group_names
from zoo.domain.protocols import DecayExemptions, LayerGroups

FACTS = Path(__file__).resolve().parents[1] / "facts" / "param_groups.json"


@functools.cache
def facts() -> dict[str, Any]:
    models: dict[str, Any] = json.loads(FACTS.read_text())["models"]
    return models


def from_runs(runs: list[int], names: list[str]) -> list[set[str]]:
    """The groups, in order, that the facts' [group, run length, ...] runs over names describe."""
    groups: list[set[str]] = []
    at = 0
    for group, length in zip(runs[::2], runs[1::2], strict=True):
        groups.extend(set() for _ in range(group + 1 - len(groups)))
        groups[group].update(names[at : at + length])
        at += length
    assert at == len(names), "the runs do not cover the parameters"
    return groups


def test_the_facts_cover_every_registered_name() -> None:
    assert sorted(facts()) == sorted(zoo.list_models())


@pytest.mark.parametrize("name", zoo.list_models())
def test_groups_and_no_weight_decay_are_the_references(name: str) -> None:
    fact = facts()[name]
    model = meta_model(name, ZooModule)
    names = [n for n, _ in model.named_parameters()]
    # the runs index into the reference's parameter order: compare only once names and order are the same
    assert len(names) == fact["num_params"]
    assert hashlib.sha256("\n".join(names).encode()).hexdigest() == fact["names_sha256"]
    for key, coarse in (("fine", False), ("coarse", True)):
        groups = group_names(names, model.group_matcher(coarse))
        assert sorted(n for g in groups for n in g) == sorted(names)
        assert [set(g) for g in groups] == from_runs(fact[key], names), f"{name} coarse={coarse}"
    assert sorted(model.no_weight_decay()) == fact["no_weight_decay"]


def test_zoo_modules_have_the_grouping_protocols() -> None:
    def as_groups(model: ZooModule) -> LayerGroups:
        return model  # mypy checks ZooModule against each Protocol

    def as_exemptions(model: ZooModule) -> DecayExemptions:
        return model

    model = meta_model("resnet18", ZooModule)
    assert isinstance(as_groups(model), LayerGroups)
    assert isinstance(as_exemptions(model), DecayExemptions)
    assert model.no_weight_decay() == frozenset()


# -- the rules, on names alone -------------------------------------------------------------------

MATCHER = GroupMatcher.of(
    stem=r"^stem",
    blocks=(
        GroupRule(r"^stages\.(\d+)\.blocks\.(\d+)"),
        GroupRule(r"^stages\.(\d+)\.transition", joins_previous=True),
        GroupRule(r"^stages\.(\d+)", suffix=(0,)),
    ),
)
NAMES = [
    "stem.conv.weight",
    "stages.0.down.weight",
    "stages.0.blocks.0.w",
    "stages.0.blocks.1.w",
    "stages.0.transition.w",
    "stages.1.down.weight",
    "stages.1.blocks.0.w",
    "stages.1.transition.w",
    "head.fc.weight",
    "norm.weight",
]


def test_keys_are_the_group_position_the_captured_numbers_and_the_suffix() -> None:
    assert MATCHER("stem.conv.weight") == (0.0,)
    assert MATCHER("stages.1.blocks.10.w") == (1.0, 1.0, 10.0)
    assert MATCHER("stages.2.down.weight") == (1.0, 2.0, 0.0)
    assert MATCHER("stages.2.transition.b") == (1.0, 2.0, float(JOINS_PREVIOUS))
    assert MATCHER("head.fc.weight") == (math.inf,)
    # the first matching rule wins, and a pattern matches only at the start of a name
    assert MATCHER("x.stem.w") == (math.inf,)


def test_groups_run_from_input_to_output_and_joiners_join_the_group_before() -> None:
    assert group_names(NAMES, MATCHER) == [
        ["stem.conv.weight"],
        ["stages.0.down.weight", "stages.0.blocks.0.w"],  # suffix (0,): the same key as the first block's
        ["stages.0.blocks.1.w", "stages.0.transition.w"],
        ["stages.1.down.weight", "stages.1.blocks.0.w", "stages.1.transition.w"],
        ["head.fc.weight", "norm.weight"],  # what no rule matches comes last, in one group
    ]
    # the order of the names changes nothing but the order within a group
    assert [sorted(g) for g in group_names(reversed(NAMES), MATCHER)] == [
        sorted(g) for g in group_names(NAMES, MATCHER)
    ]
    assert group_names([], MATCHER) == []


def test_a_joiner_sorted_first_starts_the_first_group() -> None:
    matcher = GroupMatcher.of(stem=(GroupRule(r"^a", joins_previous=True),), blocks=r"^b")
    assert group_names(["b.w", "a.w"], matcher) == [["a.w"], ["b.w"]]
    # a joiner's key sorts after its group's plain keys: it joins them, not what comes before
    joined = GroupMatcher.of(blocks=(GroupRule(r"^a", joins_previous=True), GroupRule(r"^b")))
    assert group_names(["a.w", "b.w"], joined) == [["a.w", "b.w"]]


# wrong types on purpose (cast: the checks at runtime are what is tested)
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GroupRule("("), r"GroupRule.pattern='\(' is invalid: not a regular expression"),
        (lambda: GroupRule(cast(str, 3)), "GroupRule.pattern=3 is invalid: expected a regular expression string"),
        (lambda: GroupRule("a", suffix=(1.5,)), r"GroupRule.suffix=\(1.5,\) is invalid: expected a tuple of ints"),
        (lambda: GroupRule("a", joins_previous=cast(bool, 1)), "joins_previous=1 is invalid: expected True or False"),
        (lambda: GroupMatcher((("stem", ()),)), "GroupMatcher.groups=.* is invalid"),
        (lambda: GroupMatcher((("stem", ("^a",)),)), "GroupMatcher.groups=.* is invalid"),
    ],
)
def test_bad_rules_are_refused_naming_the_value(make: Callable[[], object], match: str) -> None:
    with pytest.raises(InvalidValueError, match=match):
        make()
