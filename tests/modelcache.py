"""Registered models built once per test session, shared by the property modules that only read them.

Building is the slow part of the property suites; a test that changes a model works on a copy.
"""

from __future__ import annotations

import functools

import torch

import zoo
from zoo.archs.base import ZooModule


@functools.cache
def built(name: str) -> ZooModule:
    """The model of a registered name with default arguments, seeded and in eval mode. Do not modify it."""
    torch.manual_seed(0)
    return zoo.create_model(name).eval()
