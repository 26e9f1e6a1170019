"""Registered models built once per test session, shared by the property modules that only read them.

Building is the slow part of the property suites; a test that changes a model works on a copy.
"""

from __future__ import annotations

import functools
from typing import TypeVar

import torch

import zoo
from zoo.archs.base import ZooModule


@functools.cache
def built(name: str) -> ZooModule:
    """The model of a registered name with default arguments, seeded and in eval mode. Do not modify it."""
    torch.manual_seed(0)
    return zoo.create_model(name).eval()


M = TypeVar("M", bound=ZooModule)


def built_as(name: str, cls: type[M]) -> M:
    """built(name), checked to be of the family class cls (for the tests of one family)."""
    model = built(name)
    assert isinstance(model, cls), f"{name} is a {type(model).__name__}, not a {cls.__name__}"
    return model
