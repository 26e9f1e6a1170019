"""Random fills run on several threads: the same weights on any number of them, and code inside sees what it wrote."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import zoo
from zoo.api import default_zoo
from zoo.domain.values import BuildRequest
from zoo.services.builder import Builder
from zoo.services.parallel_init import parallel_random_fills
from zoo.services.weights.meta import materialize_parameters, parameters_on_meta


def _nan(*shape: int) -> torch.Tensor:
    return torch.full(shape, math.nan)


def _initialised(name: str, seed: int, threads: int) -> dict[str, torch.Tensor]:
    """name's one-pass init (meta build, then init_all_weights) with fills on `threads` threads."""
    spec = default_zoo().get_spec(name)
    with parameters_on_meta():
        model = spec.constructor(**Builder().model_args(spec, BuildRequest(cfg=spec.default_cfg)))
    materialize_parameters(model, "cpu", fill=math.nan)
    torch.manual_seed(seed)
    init = getattr(model, "init_all_weights")  # noqa: B009  # nn.Module's __getattr__ types it as a tensor
    with parallel_random_fills(threads=threads):
        init()
    return model.state_dict()


@pytest.mark.parametrize("threads", [2, 5])
def test_weights_are_the_same_on_any_number_of_threads(threads: int) -> None:
    one = _initialised("resnet18", seed=3, threads=1)
    many = _initialised("resnet18", seed=3, threads=threads)
    assert one.keys() == many.keys()
    assert all(torch.equal(one[k], many[k]) for k in one)
    other_seed = _initialised("resnet18", seed=4, threads=threads)
    assert not torch.equal(one["conv1.weight"], other_seed["conv1.weight"])


def test_a_read_inside_sees_the_fill() -> None:
    a = _nan(4000)
    with parallel_random_fills(threads=2):
        nn.init.normal_(a, 3.0, 0.1)
        mean = a.mean().item()  # would be NaN had the fill not run first
        a[:10].zero_()  # a later write to part of it lands after the fill
    assert mean == pytest.approx(3.0, abs=0.02)
    assert torch.equal(a[:10], torch.zeros(10))
    assert a[10:].mean().item() == pytest.approx(3.0, abs=0.02)


def test_the_later_of_two_fills_wins() -> None:
    a, b, c = _nan(3000), _nan(3000), _nan(3000)
    with parallel_random_fills(threads=3):
        nn.init.uniform_(a, 0.0, 1.0)
        nn.init.normal_(a, 10.0, 0.1)  # the same tensor again
        b.normal_(10.0, 0.1)  # the Tensor method too
        nn.init.uniform_(b[:100], -1.0, 0.0)  # then a view of it
        nn.init.uniform_(c[:100], -1.0, 0.0)  # a part, then the whole (fills run largest first)
        nn.init.normal_(c, 10.0, 0.1)
    assert a.mean().item() == pytest.approx(10.0, abs=0.02)
    assert c[:100].min().item() > 5.0
    assert bool(((b[:100] >= -1.0) & (b[:100] <= 0.0)).all())
    assert b[100:].mean().item() == pytest.approx(10.0, abs=0.02)


def test_every_kind_of_fill_writes_with_its_own_distribution() -> None:
    big = 1 << 17  # above the size that is handed to another thread
    w = {k: _nan(big // 256, 256) for k in ("kn", "ku", "xn", "xu", "tn")}
    with parallel_random_fills(threads=2):
        nn.init.kaiming_normal_(w["kn"], mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_uniform_(w["ku"], a=math.sqrt(5))
        nn.init.xavier_normal_(w["xn"])
        nn.init.xavier_uniform_(w["xu"])
        nn.init.trunc_normal_(w["tn"], std=0.02)
    assert not any(t.isnan().any() for t in w.values())
    fan_in, fan_out = 256, big // 256
    assert w["kn"].std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.02)
    assert w["ku"].abs().max().item() <= 1.0 / math.sqrt(fan_in)
    assert w["xn"].std().item() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.02)
    assert w["xu"].abs().max().item() <= math.sqrt(6.0 / (fan_in + fan_out))
    assert w["tn"].abs().max().item() <= 2.0  # truncated at [-2, 2]
    assert w["tn"].std().item() == pytest.approx(0.02, rel=0.05)


def test_a_callers_generator_is_honoured() -> None:
    a, expected = _nan(500), _nan(500)
    nn.init.normal_(expected, generator=torch.Generator().manual_seed(5))
    with parallel_random_fills(threads=2):
        nn.init.normal_(a, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, expected)


def test_a_fill_that_fails_raises_when_the_block_ends() -> None:
    with pytest.raises(ValueError, match="fewer than 2 dimensions"), parallel_random_fills(threads=2):
        nn.init.kaiming_normal_(_nan(10))


def test_fills_pending_when_the_block_raises_are_dropped() -> None:
    a = _nan(100)

    def fill_then_fail() -> None:
        with parallel_random_fills(threads=2):
            nn.init.normal_(a)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        fill_then_fail()
    assert a.isnan().all()


def test_an_in_place_fill_of_a_leaf_that_needs_grad_fails_as_without() -> None:
    p = nn.Parameter(_nan(100))
    with pytest.raises(RuntimeError, match="leaf Variable"):
        p.normal_()
    with pytest.raises(RuntimeError, match="leaf Variable"), parallel_random_fills(threads=2):
        p.normal_()
    with torch.no_grad(), parallel_random_fills(threads=2):
        p.normal_()
    assert not p.isnan().any()


def test_a_model_created_in_inference_mode_is_initialised() -> None:
    # its parameters are inference tensors, which only inference mode may write: the fills on other
    # threads must run in it too
    with torch.inference_mode():
        torch.manual_seed(0)
        model = zoo.create_model("resnet18")
        weight = model.get_submodule("conv1").get_parameter("weight")
        assert weight.is_inference()
        assert float(weight.std()) > 0
    torch.manual_seed(0)
    again = zoo.create_model("resnet18").get_submodule("conv1").get_parameter("weight")
    with torch.inference_mode():
        assert torch.equal(weight, again)  # the same weights as outside inference mode


def test_grad_and_inference_modes_reach_the_threads() -> None:
    big = 1 << 17  # handed to another thread
    with torch.inference_mode():
        a = torch.empty(big)
    with torch.inference_mode(), parallel_random_fills(threads=2):
        nn.init.normal_(a)
        nn.init.normal_(torch.empty(big))  # two lanes busy, so one fill surely runs off the calling thread
    assert a.std().item() == pytest.approx(1.0, rel=0.05)


class _Traced(torch.Tensor):
    """A tensor subclass, as a tracing or fake tensor is: its fills stay on the caller's thread."""


def test_a_tensor_subclass_is_filled_as_called() -> None:
    torch.manual_seed(0)
    expected = nn.init.normal_(_nan(1 << 17))
    sub = _nan(1 << 17).as_subclass(_Traced)
    torch.manual_seed(0)
    with parallel_random_fills(threads=2):
        nn.init.normal_(sub)  # from the global generator, as without the layer (a deferred fill has its own)
    assert torch.equal(sub.as_subclass(torch.Tensor), expected)
