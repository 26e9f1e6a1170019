"""zoo.optimize_for_inference over each drawn model: exact in float32, its guard's figures true in bfloat16.

float32 copies only fold batch norms (per-channel terms in float64), run layers and their activations as one
oneDNN call and change the memory format, so they stay within the guard's float32 tolerance. bfloat16 copies
at random init may exceed the bfloat16 tolerance (tests/property/test_layouts.py explains the scale of such
errors), so their guard is checked for telling the truth: its figures equal an independent computation, and
it warns exactly when outside the tolerance.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import zoo
from modelcache import built
from zoo.inference import ACCURACY_TOLERANCE

# conftest.py: small forwards on one torch thread; the run's drawn names (tests/tiers.py)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.drawn_names]


@functools.cache
def image() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def test_optimised_copies_are_exact_in_float32_and_honest_in_bfloat16(name: str) -> None:
    model = built(name)
    x = image()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)
        taps = model.forward_intermediates(x, intermediates_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a norm left unfolded is said, and not this test's subject
        exact = zoo.optimize_for_inference(model, dtype="float32", example=x)
    assert exact.accuracy is not None
    assert exact.accuracy.within_tolerance, exact.accuracy
    exact_taps = exact.forward_intermediates(x, intermediates_only=True)
    assert isinstance(exact_taps, list)
    assert len(exact_taps) == len(taps)
    for got, want in zip(exact_taps, taps, strict=True):
        assert float((got - want).abs().max() / want.abs().max().clamp_min(1e-12)) <= ACCURACY_TOLERANCE["float32"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        low = zoo.optimize_for_inference(model, dtype="bfloat16", example=x)
    guard = [w for w in caught if "differs from float32 eager" in str(w.message)]
    assert low.accuracy is not None
    assert bool(guard) == (not low.accuracy.within_tolerance)
    got = low(x)
    assert isinstance(got, torch.Tensor)
    assert got.dtype == torch.float32
    assert low.accuracy.max_rel_error == pytest.approx(float((got - expected).abs().max() / expected.abs().max()))
    # the shared model is as it was
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
