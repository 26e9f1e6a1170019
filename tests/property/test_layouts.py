"""channels_last memory format and bfloat16 autocast give each drawn model's float32 outputs, module by module.

The comparison is local. A float32 forward in the contiguous layout records every module's output and the
logits; the channels_last (or autocast) forward then compares each module's output, and the logits, with the
recorded ones, relative to that output's largest magnitude, and hands the recorded values on in place of its
own (in the layout and dtype the module produced), so that each module is judged on float32 inputs and its
own arithmetic, and a wrong value between modules (a model's or a block's own tensor code) shows in the next
module that reads it.

Why not the logits alone: a deep model at random init amplifies rounding noise with depth. Its eval-mode
batch norms are identities, so tf_efficientnetv2_m's residual stream reaches ~1e5 and its squeeze-excitation
gates saturate into 0/1 switches; float32 summation-order noise alone (channels_last) moved its logits by
60-100% of their scale, and bfloat16's rounding moved mobilenetv2_120d's by 30%: no tolerance on the logits
tells that from a layout bug. A module's own error does not grow with the depth it sits at, and a layout bug
(a kernel reading NHWC memory as NCHW, a view or a weight that assumes contiguous strides) is an error of the
order of the output in the module that has it; test_a_conv_that_... shows the comparison reports one.

- channels_last: 1e-4 of each output's scale. Only the order of float32 sums changes (other conv kernels);
  the largest local differences seen (about 90 names: ConvNeXt, CSPNet, DenseNet, EfficientNet) are 3.2e-6.
- bfloat16 autocast: 5e-2 of each output's scale. bfloat16 keeps 8 significant bits (a relative rounding
  error up to 2**-8 = 3.9e-3 per value; convolutions and linears run in it, norms in float32): one module's
  operations on float32 inputs rounded once stay within a few of those; the largest seen are 8.8e-3.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from modelcache import built
from zoo.archs.base import ZooModule

CHANNELS_LAST_RTOL = 1e-4
BF16_RTOL = 5e-2
LOGITS = "the logits"  # the recorded forward_head output's key (no module is named so)

# conftest.py: small forwards on one torch thread; the run's drawn names (tests/tiers.py)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.drawn_names]

Recorded = dict[str, collections.deque[torch.Tensor]]
Forward = Callable[[], tuple[torch.Tensor, torch.Tensor]]


@functools.cache
def image() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def run(model: ZooModule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """forward_features(x) and the logits forward_head makes of them (what model(x) runs)."""
    features = model.forward_features(x)
    return features, model.forward_head(features)


@contextlib.contextmanager
def hooked(model: nn.Module, make: Callable[[str], Callable[..., object]]) -> Iterator[None]:
    """make(name)'s forward hook on every module of model, removed on exit."""
    handles = [module.register_forward_hook(make(name)) for name, module in model.named_modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def record(model: ZooModule, x: torch.Tensor) -> Recorded:
    """Every module's floating-point tensor outputs of the float32 forward of x, per module in call order, and
    the logits (copies: a later in-place activation does not change them)."""
    recorded: Recorded = collections.defaultdict(collections.deque)

    def make(name: str) -> Callable[..., None]:
        def keep(_module: nn.Module, _args: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                recorded[name].append(out.detach().clone())

        return keep

    with torch.no_grad(), hooked(model, make):
        _, logits = run(model, x)
    recorded[LOGITS].append(logits.clone())
    return recorded


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| over want's largest magnitude (inf where want is all zeros and got is not, or for a NaN)."""
    error = float((got.float() - want).abs().max())
    scale = float(want.abs().max())
    ratio = error / scale if scale > 0 else (math.inf if error > 0 else 0.0)
    return math.inf if math.isnan(ratio) else ratio


def local_errors(
    model: ZooModule, forward: Forward, recorded: Recorded
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Each module's (and the logits') largest relative_error to its recorded outputs during forward(), every
    module's output replaced by its recorded one; and the features and logits forward() returned."""
    expected = {name: collections.deque(outputs) for name, outputs in recorded.items()}
    errors: dict[str, float] = {}

    def make(name: str) -> Callable[..., torch.Tensor | None]:
        def compare(_module: nn.Module, _args: object, out: object) -> torch.Tensor | None:
            if not (isinstance(out, torch.Tensor) and out.is_floating_point()):
                return None
            assert expected.get(name), f"{name} ran more often than in the float32 forward"
            want = expected[name].popleft()
            assert out.shape == want.shape, f"{name}: {tuple(out.shape)}, not {tuple(want.shape)}"
            errors[name] = max(errors.get(name, 0.0), relative_error(out, want))
            # the recorded values, in the layout and dtype this module produced: what follows sees both as they are
            return torch.empty_like(out).copy_(want)

        return compare

    with torch.no_grad(), hooked(model, make):
        features, logits = forward()
    errors[LOGITS] = relative_error(logits, expected[LOGITS].popleft())
    return errors, features, logits


def worst(errors: dict[str, float]) -> tuple[float, str]:
    """The largest local error and where (a module's dotted path, or LOGITS)."""
    where = max(errors, key=errors.__getitem__)
    return errors[where], where


def in_channels_last(model: ZooModule, x: torch.Tensor, recorded: Recorded) -> tuple[dict[str, float], torch.Tensor]:
    """local_errors of the channels_last forward of x, and its features (the model goes back to contiguous)."""
    x_cl = x.to(memory_format=torch.channels_last)
    try:
        model.to(memory_format=torch.channels_last)
        errors, features, logits = local_errors(model, lambda: run(model, x_cl), recorded)
    finally:
        model.to(memory_format=torch.contiguous_format)  # the shared model goes back as it was
    assert logits.dtype == torch.float32
    return errors, features


def test_channels_last_and_bfloat16_autocast_agree_with_float32(name: str) -> None:
    model = built(name)
    x = image()
    recorded = record(model, x)
    errors, features = in_channels_last(model, x, recorded)
    # the layout carries through the network: no layer converts back to contiguous on the way
    if features.ndim == 4:  # a token model's features are a token sequence, which has no channels_last layout
        assert features.is_contiguous(memory_format=torch.channels_last)
    error, where = worst(errors)
    assert error <= CHANNELS_LAST_RTOL, f"channels_last: {where} is off by {error:.2e} of its output's scale"

    def autocast() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return run(model, x)

    errors, _, logits = local_errors(model, autocast, recorded)
    if model.num_classes:  # the classifier ran in bfloat16, not silently in float32 (a headless model ends in a norm)
        assert logits.dtype == torch.bfloat16
    error, where = worst(errors)
    assert error <= BF16_RTOL, f"bfloat16 autocast: {where} is off by {error:.2e} of its output's scale"


def test_a_conv_that_reads_channels_last_memory_as_contiguous_is_caught(name: str) -> None:
    """The comparison is not blind to a layout bug deep in a model: a convolution half-way through that takes its
    channels_last input's memory for an NCHW tensor's (what a kernel ignoring strides does) is reported, there."""
    model = built(name)
    x = image()
    recorded = record(model, x)
    # the convolutions whose input the misreading changes: more than one channel, at more than one position
    scrambled = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.in_channels > 1 and n in recorded and math.prod(recorded[n][0].shape[2:]) > 1
    ]
    assert scrambled, f"{name} has no convolution of a multi-channel map"
    broken = scrambled[len(scrambled) // 2]

    def misread(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        t, *rest = args
        return (t.permute(0, 2, 3, 1).reshape(t.shape).contiguous(memory_format=torch.channels_last), *rest)

    handle = model.get_submodule(broken).register_forward_pre_hook(misread)
    try:
        errors, _ = in_channels_last(model, x, recorded)
    finally:
        handle.remove()
    assert worst(errors)[1] == broken
    assert errors[broken] > 100 * CHANNELS_LAST_RTOL
