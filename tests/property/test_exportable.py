"""torch.export of each drawn model (tests/tiers.py): the classifier and its feature extractors, with dynamic
batch and size.

Exporting is the slow part (seconds per model, spent in symbolic shape tracing), so each run exports
each drawn model ONCE, with dynamic batch, height and width: as its classifier or as one extractor kind
(list, dict, getter, hook; a token model serves the getter only). What each model gets rotates over
the five from an offset drawn per run, so over runs every model meets every kind (with --all-names every
run exports every model and every kind, each on about a fifth of the models); the extractor's out_indices
are drawn too (printed with a failure). The draws come from the Hypothesis seed when one is given (`make
unit` passes a new one each run; `make unit SEED=...` replays a run), and from the fixed FALLBACK_SEED when
none is: every process that collects the file must draw the same tests (pytest-xdist refuses a run whose
workers collected different ones), so a bare `pytest` always draws the same. Each test id names what was
drawn.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import draw
import tiers
import zoo
from model_checks import images
from modelcache import built
from zoo.domain import ZooError
from zoo.services.export import export_program, input_dims, min_dynamic_size
from zoo.services.features import FeatureFactory

MODELS = zoo.list_models()
KINDS = ("list", "dict", "getter", "hook")
SLOTS = ("classifier", *KINDS)
SIZE = 64  # the example's height and width (or twice the deepest selected stride, if larger)
BATCH = 2  # the example's batch: torch.export specialises a batch of 1
FACTORY = FeatureFactory()
FALLBACK_SEED = draw.FALLBACK_SEED  # the draws' seed without --hypothesis-seed (see the module docstring)

# conftest.py: small forwards on one torch thread; a failure says how to replay the draw (drawn_names)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.drawn_names]


def _served(name: str) -> tuple[str, ...]:
    """The extractor kinds the model of name serves (its class's feature_classes; every kind by default)."""
    served: tuple[str, ...] = getattr(type(built(name)), "feature_classes", KINDS)
    return served


def draws(seed: object) -> list[tuple[str, str, int]]:
    """What each model gets for a run with the Hypothesis seed seed (None: FALLBACK_SEED): (name, slot, seed)."""
    rng = random.Random(str(FALLBACK_SEED if seed is None else seed))
    offset = rng.randrange(len(SLOTS))
    return [(name, SLOTS[(i + offset) % len(SLOTS)], rng.randrange(2**32)) for i, name in enumerate(MODELS)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the test by what is drawn for this run (see the module docstring)."""
    if "drawn" not in metafunc.fixturenames:
        return
    seed = tiers.run_seed(metafunc.config)
    names = set(tiers.drawn_names(metafunc.config))
    cases = [pytest.param(case, id=f"{case[0]}-{case[1]}") for case in draws(seed) if case[0] in names]
    metafunc.parametrize("drawn", cases)


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


def test_model_exports_with_dynamic_shapes(drawn: tuple[str, str, int]) -> None:
    name, slot, seed = drawn
    model = built(name)
    if slot == "classifier":
        check_export(model)
        return
    # a kind the model does not serve (a token model's list/dict/hook) is refused by the factory, tested with
    # the family; the slot then exports the getter, which every model serves
    kind = slot if slot in _served(name) else "getter"
    n = len(model.feature_info)
    rng = random.Random(seed)
    out_indices = sorted(rng.sample(range(n), rng.randint(1, n)))
    print(f"drawn: feature_cls={kind!r}, out_indices={out_indices}")  # shown with a failure
    cfg = zoo.api.default_zoo().get_spec(name).feature_cfg
    extractor = FACTORY.wrap(model, cfg, out_indices=out_indices, feature_cls=kind).eval()
    check_export(extractor)


def test_draws_are_reproducible_and_rotate() -> None:
    # without a seed every process must draw alike (an unseeded generator would not); with one, the
    # seed decides, each run covers every slot, and over seeds each model meets every slot
    assert draws(None) == draws(None) == draws(FALLBACK_SEED)
    assert draws(12345) == draws("12345")
    runs = [draws(seed) for seed in range(40)]
    for run in runs:
        assert [name for name, _, _ in run] == MODELS
        assert {slot for _, slot, _ in run} == set(SLOTS)
    assert all({run[i][1] for run in runs} == set(SLOTS) for i in range(len(MODELS)))
    assert len({run[0][2] for run in runs}) == len(runs)  # the extractors' own draws follow the seed too
