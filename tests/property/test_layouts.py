"""channels_last memory format and bfloat16 autocast give each drawn model's float32 outputs, within tolerance.

Tolerances are relative to the output's scale (its largest magnitude), as random-init logits range
from 1e-3 to a few units across families:
- channels_last: 1e-4 of the scale. Only the order of float32 sums changes (other conv kernels);
  the differences seen are below 2e-6 of the scale.
- bfloat16 autocast: 1e-1 of the scale, and a cosine similarity of at least 0.999 per image. bfloat16
  keeps 8 significant bits (a relative rounding error up to 2**-8 = 3.9e-3 per value, convolutions
  and linears run in it, norms in float32); the differences seen are mostly below 2e-2 of the scale
  and the cosine similarity above 0.9995. The largest, 6e-2, is tf_mobilenetv3_large_075's at its seeded
  random init (some twenty unnormalised blocks in eval mode, logits near 5e-2): the reference model
  with the same weights gives the same 6e-2, so it is the architecture's, not an error of ours.
"""

from __future__ import annotations

import functools

import pytest
import torch

from modelcache import built

CHANNELS_LAST_RTOL = 1e-4
BF16_RTOL = 1e-1
BF16_MIN_COSINE = 0.999


# conftest.py: small forwards on one torch thread; the run's drawn names (tests/tiers.py)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.drawn_names]


@functools.cache
def image() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def largest_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| as a fraction of expected's largest magnitude."""
    return float((got.float() - expected).abs().max() / expected.abs().max())


def test_channels_last_and_bfloat16_autocast_agree_with_float32(name: str) -> None:
    model = built(name)
    x = image()
    with torch.no_grad():
        expected = model(x)
        try:
            model.to(memory_format=torch.channels_last)
            features = model.forward_features(x.to(memory_format=torch.channels_last))
            channels_last = model.forward_head(features)
        finally:
            model.to(memory_format=torch.contiguous_format)  # the shared model goes back as it was
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(x)
    # the layout carries through the network: no layer converts back to contiguous on the way
    if features.ndim == 4:  # a token model's features are a token sequence, which has no channels_last layout
        assert features.is_contiguous(memory_format=torch.channels_last)
    assert channels_last.dtype == torch.float32
    assert largest_error(channels_last, expected) <= CHANNELS_LAST_RTOL
    if model.num_classes:  # the classifier ran in bfloat16, not silently in float32 (a headless model ends in a norm)
        assert autocast.dtype == torch.bfloat16
    assert largest_error(autocast, expected) <= BF16_RTOL
    # at the output's scale: cosine_similarity's eps (1e-8 on the product of the norms) would swamp outputs as
    # small as a fresh MobileNetV4 hybrid's (its residual branches start scaled by 1e-5: logits near 1e-8)
    scale = expected.abs().max()
    cosine = torch.nn.functional.cosine_similarity(autocast.float() / scale, expected / scale, dim=1)
    assert cosine.min() >= BF16_MIN_COSINE
