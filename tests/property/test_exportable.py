"""torch.export of every registered model: the classifier and a feature extractor, with dynamic batch and size.

Exporting is the slow part (seconds per model, spent in symbolic shape tracing), so each run exports
every classifier (dynamic batch; for a quarter of the models, rotating, dynamic height and width too)
and ONE extractor per model (dynamic batch, height and width). The extractor's kind rotates through
list/dict/getter/hook over the models from an offset drawn per run, so every kind is exported every
run (on about a quarter of the models each) and every model meets every kind over runs; its
out_indices are drawn too (printed with a failure). The draws come from the Hypothesis seed when one
is given, so `make unit SEED=...` replays a run; each test id names what was drawn.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import zoo
from modelcache import built
from zoo.domain import ZooError
from zoo.services.export import export_program, input_dims, min_dynamic_size
from zoo.services.features import FeatureFactory

MODELS = zoo.list_models()
KINDS = ("list", "dict", "getter", "hook")
SIZE = 64  # the example's height and width (or twice the deepest selected stride, if larger)
BATCH = 2  # the example's batch: torch.export specialises a batch of 1
FACTORY = FeatureFactory()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise both tests by what is drawn for this run (see the module docstring)."""
    seed = metafunc.config.getoption("hypothesis_seed", default=None)
    rng = random.Random(str(seed) if seed is not None else None)
    offset = rng.randrange(len(KINDS))
    if "drawn" in metafunc.fixturenames:
        kinds = [(name, KINDS[(i + offset) % len(KINDS)]) for i, name in enumerate(MODELS)]
        cases = [pytest.param((name, kind, rng.randrange(2**32)), id=f"{name}-{kind}") for name, kind in kinds]
        metafunc.parametrize("drawn", cases)
    if "sized" in metafunc.fixturenames:
        # a dynamic height/width costs twice a dynamic batch alone (symbolic shape reasoning); the extractors,
        # which run the same trunk, have it every time, the classifiers (the head on top) a quarter at a time
        sized = [(name, (i + offset) % len(KINDS) == 0) for i, name in enumerate(MODELS)]
        metafunc.parametrize("sized", [pytest.param(c, id=f"{c[0]}-{'nhw' if c[1] else 'n'}") for c in sized])


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small forwards stall at multi-thread barriers on a busy CI; tracing is single-threaded anyway."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def other_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """A batch and size unlike the example's that eager accepts (None: the architecture fixes its input size)."""
    low = min_dynamic_size(model)
    shape = (3, max(low, SIZE) + 16, max(low, SIZE) + 8)  # non-square, not a multiple of the deepest stride
    try:
        with torch.no_grad():
            model(images(1, *shape[1:], seed=3))
    except (ZooError, RuntimeError, AssertionError):
        return None
    return shape


def as_list(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    assert isinstance(out, (list, tuple))
    return list(out)


def check_export(model: nn.Module, *, dynamic_size: bool = True) -> None:
    """model exported from a 2-image example; the program equals eager at another batch (and size, if allowed)."""
    low = min_dynamic_size(model)
    other = other_shape(model) if dynamic_size else None
    size = max(low, SIZE)
    program = export_program(model, images(BATCH, size, size, seed=1), dynamic_size=other is not None)
    dims = {name: (least, most) for name, least, most in input_dims(program)}
    assert dims["batch"] == (1, None)
    if other is None:
        assert dims["height"] == dims["width"] == (size, size)
        batch, height, width = 3, size, size
    else:
        assert dims["height"] == dims["width"] == (low, None)
        batch, height, width = other
    x = images(batch, height, width, seed=2)
    with torch.no_grad():
        got, expected = as_list(program.module()(x)), as_list(model(x))
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        # the program runs the same aten kernels as eager: any difference is a different graph
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_classifier_exports_with_dynamic_shapes(sized: tuple[str, bool]) -> None:
    name, dynamic_size = sized
    check_export(built(name), dynamic_size=dynamic_size)


def test_extractor_exports_with_dynamic_shapes(drawn: tuple[str, str, int]) -> None:
    name, kind, seed = drawn
    n = len(built(name).feature_info)
    rng = random.Random(seed)
    out_indices = sorted(rng.sample(range(n), rng.randint(1, n)))
    print(f"drawn: feature_cls={kind!r}, out_indices={out_indices}")  # shown with a failure
    cfg = zoo.api.default_zoo().get_spec(name).feature_cfg
    extractor = FACTORY.wrap(built(name), cfg, out_indices=out_indices, feature_cls=kind).eval()
    check_export(extractor)
