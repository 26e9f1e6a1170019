"""Garbage at every public facade function and keyword: the only exceptions that come back are ZooErrors."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo
from zoo.archs.base import ZooModule

# Small ints only where they can become layer widths: a valid but huge width is a request for memory,
# not garbage. Values past what torch can hold are kept, since they must be refused, not attempted.
_INTS = st.integers(-8, 40) | st.sampled_from([2**31, 2**40, 2**63, -(2**63), 10**30])
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    _INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=6),
    st.complex_numbers(max_magnitude=10),
    st.from_type(type).filter(lambda t: t is not type),
)
GARBAGE = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=6) | _INTS, inner, max_size=3)
        | st.frozensets(_INTS, max_size=3)
    ),
    max_leaves=6,
)

CREATE_KEYWORDS = (
    "pretrained",
    "num_classes",
    "in_chans",
    "features_only",
    "out_indices",
    "feature_cls",
    "checkpoint_path",
    "pretrained_cfg_overlay",
    "prune_spec",
)
# model keywords ResNet takes (layers is left out: small valid depths still build slowly)
MODEL_KEYWORDS = ("global_pool", "drop_rate", "drop_path_rate", "output_stride", "cardinality", "stem_type", "bogus")
LIST_KEYWORDS = ("filter", "exclude_filters", "module", "pretrained", "include_tags")


@contextlib.contextmanager
def offline_cache(root: Path) -> Iterator[None]:
    """No network and an empty cache: pretrained=True must fail with a ZooError, not fetch."""
    saved = {k: os.environ.get(k) for k in ("ZOO_OFFLINE", "ZOO_CACHE_DIR")}
    os.environ["ZOO_OFFLINE"] = "1"
    os.environ["ZOO_CACHE_DIR"] = str(root)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def only_zoo_errors(call: Callable[[], object]) -> None:
    """Run call; a ZooError is an answer, anything else raised is the bug under test."""
    with contextlib.suppress(zoo.ZooError):
        call()


@pytest.fixture(scope="module")
def empty_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty-cache")


@settings(max_examples=60)
@given(value=GARBAGE)
def test_names(value: object) -> None:
    for fn in (zoo.create_model, zoo.is_model, zoo.get_default_cfg, zoo.list_pretrained):
        only_zoo_errors(lambda fn=fn: fn(value))  # type: ignore[misc]  # garbage in place of a typed argument
    only_zoo_errors(lambda: zoo.get_pretrained_cfg_value(value, "crop_pct"))  # type: ignore[arg-type]  # garbage
    only_zoo_errors(lambda: zoo.get_pretrained_cfg_value("resnet18", value))  # type: ignore[arg-type]  # garbage


@pytest.mark.parametrize("keyword", LIST_KEYWORDS)
@settings(max_examples=25)
@given(value=GARBAGE)
def test_list_models_keywords(keyword: str, value: object) -> None:
    only_zoo_errors(lambda: zoo.list_models(**{keyword: value}))  # type: ignore[arg-type]  # garbage
    if keyword in ("filter", "exclude_filters"):
        only_zoo_errors(lambda: zoo.list_pretrained(**{keyword: value}))  # type: ignore[arg-type]  # garbage


@pytest.mark.parametrize("keyword", CREATE_KEYWORDS + MODEL_KEYWORDS)
@settings(max_examples=12)
@given(value=GARBAGE)
def test_create_model_keywords(keyword: str, value: object, empty_cache: Path) -> None:
    extra = {"features_only": True} if keyword in ("out_indices", "feature_cls") else {}
    with offline_cache(empty_cache):
        only_zoo_errors(lambda: zoo.create_model("resnet18", **extra, **{keyword: value}))  # type: ignore[call-overload]  # garbage


@pytest.fixture(scope="module")
def resnet18() -> ZooModule:
    return zoo.create_model("resnet18").eval()


@settings(max_examples=15)
@given(num_classes=GARBAGE, global_pool=GARBAGE)
def test_reset_classifier(num_classes: object, global_pool: object, resnet18: ZooModule) -> None:
    before = (resnet18.num_classes, resnet18.get_classifier(), resnet18.global_pool)
    try:
        resnet18.reset_classifier(num_classes, global_pool)  # type: ignore[arg-type]  # garbage
    except zoo.ZooError:
        # refused: nothing half-changed
        assert (resnet18.num_classes, resnet18.get_classifier(), resnet18.global_pool) == before
    else:
        resnet18.reset_classifier(1000, "avg")
    with torch.no_grad():
        assert resnet18(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)
