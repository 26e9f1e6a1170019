"""Feature extractors of each drawn model (tests/tiers.py): every tap subset, every strategy, every device.

The output shapes of every subset are checked for every registered name on the meta device (tests/every_name);
here the values: each subset's taps equal the all-taps extractor's, for every strategy.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import zoo
from modelcache import built, served, taps_without_getter
from zoo.archs.surface import Intermediates, run_intermediates, tap_is_state
from zoo.domain.errors import InvalidFeatureRequestError
from zoo.domain.values import FEATURE_CLASSES, FeatureCfg, FeatureInfo
from zoo.services.features import FeatureFactory

SIZE = 64
BATCH = 2
EXHAUSTIVE_MAX_TAPS = 6
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
    ),
]
FACTORY = FeatureFactory()


class TapChain(nn.Module):
    """Eight taps (a stem, then seven stages inside an nn.Sequential): more than the exhaustive limit."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        widths = [8, 12, 12, 16, 16, 24, 24, 32]
        strides = [1, 2, 1, 2, 1, 2, 1]
        self.stages = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(cin, cout, 3, stride=s, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
                for cin, cout, s in zip(widths[:-1], widths[1:], strides, strict=True)
            )
        )
        self.head = nn.Linear(widths[-1], 10)
        reductions = list(itertools.accumulate([2, *strides], lambda a, b: a * b))
        self.feature_info = [
            FeatureInfo(index=i, module="stem" if i == 0 else f"stages.{i - 1}", num_chs=c, reduction=r)
            for i, (c, r) in enumerate(zip(widths, reductions, strict=True))
        ]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.stages(self.stem(x))
        return out

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Intermediates:
        return run_intermediates(
            x,
            [tap_is_state(step) for step in (self.stem, *self.stages)],
            self.feature_info,
            indices,
            norm=norm,
            stop_early=stop_early,
            output_fmt=output_fmt,
            intermediates_only=intermediates_only,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.forward_features(x).mean((2, 3)))
        return out


TAP_CHAIN = "tap_chain (test model)"


# thousands of small forwards: with a core busy elsewhere (a neighbour, an xdist worker) every multi-threaded
# one stalls at its barriers, which stretched this module from two minutes to a quarter of an hour
pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # conftest.py: small forwards on one torch thread
    # the run's drawn names (tests/tiers.py) and the test model, on each device, at module scope: `case` builds
    # each once per device
    pytest.mark.drawn_names(scope="module", extra=(TAP_CHAIN,)),
    pytest.mark.parametrize("device", DEVICES, scope="module"),
]


@attrs.frozen
class Case:
    """One base model on one device, its input, and its all-taps (list) outputs."""

    model: nn.Module
    cfg: FeatureCfg
    x: torch.Tensor
    reference: list[torch.Tensor]

    @property
    def num_taps(self) -> int:
        return len(self.reference)


@pytest.fixture(scope="module")
def case(name: str, device: str) -> Case:
    """Each base model is built once per module and device; pytest groups the tests that share it."""
    torch.manual_seed(0)
    model: nn.Module
    if name == TAP_CHAIN:
        model, cfg = TapChain(), FeatureCfg(flatten_sequential=True)
    else:
        # the session's shared build on the CPU (extractors only read it); a copy of it on another device
        shared = built(name)
        model = shared if device == "cpu" else copy.deepcopy(shared)
        cfg = zoo.api.default_zoo().get_spec(name).feature_cfg
    model = model.eval().to(device)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        # the list extractor, or a token model's hooked blocks laid out on the patch grid
        reference = taps_without_getter(model, cfg, x)
    return Case(model, cfg, x, reference)


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.device.type == "cpu":
        assert torch.equal(a, b)
    else:
        # cuDNN may pick a different (equally valid) algorithm per call; allow rounding differences only
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def check_subset(case: Case, out_indices: Sequence[int]) -> None:
    """The properties every extractor of every tap subset holds, for each strategy."""
    n = case.num_taps
    selected = sorted(i % n for i in out_indices)
    for kind in FEATURE_CLASSES:
        if kind not in served(case.model):
            # a token model's blocks give tokens, not maps: refused, pointing at the getter
            with pytest.raises(InvalidFeatureRequestError, match="getter"):
                FACTORY.wrap(case.model, case.cfg, out_indices=out_indices, feature_cls=kind)
            continue
        extractor = FACTORY.wrap(case.model, case.cfg, out_indices=out_indices, feature_cls=kind)
        with torch.no_grad():
            out = extractor(case.x)
        if isinstance(out, dict):
            assert list(out) == [str(i) for i in selected], kind  # the tap indices, as the reference keys them
            tensors = list(out.values())
        else:
            tensors = out
        assert extractor.out_indices == tuple(selected), kind
        assert len(tensors) == len(selected), kind
        for t, tap, i in zip(tensors, extractor.feature_info, selected, strict=True):
            assert tap.index == i
            assert t.shape[0] == BATCH, (kind, tap)
            assert t.shape[1] == tap.num_chs, (kind, tap)
            assert all(abs(s - math.ceil(SIZE / tap.reduction)) <= 1 for s in t.shape[2:]), (kind, tap, t.shape)
            assert torch.isfinite(t).all(), (kind, tap)
            # equal to the all-taps extractor's output: hence list, dict, hook and getter agree too
            _same(t, case.reference[i])


def test_default_extractor_has_every_tap(case: Case) -> None:
    extractor = FACTORY.wrap(case.model, case.cfg)
    taps = list(case.model.feature_info)  # type: ignore[arg-type]  # every zoo model has feature_info
    assert extractor.out_indices == tuple(range(len(taps)))
    assert list(extractor.feature_info) == taps
    assert [t.shape[1] for t in case.reference] == extractor.feature_info.channels()


def test_every_tap_subset(case: Case) -> None:
    n = case.num_taps
    if n > EXHAUSTIVE_MAX_TAPS:
        pytest.skip(f"{n} taps: subsets are drawn by test_drawn_tap_subsets")
    subsets = [c for k in range(1, n + 1) for c in itertools.combinations(range(n), k)]
    for j, subset in enumerate(subsets):
        # every other subset is written from the end, reversed: negative indices and order must not matter
        check_subset(case, subset if j % 2 else [i - n for i in reversed(subset)])


def test_drawn_tap_subsets(case: Case) -> None:
    n = case.num_taps
    if n <= EXHAUSTIVE_MAX_TAPS:
        pytest.skip(f"{n} taps: test_every_tap_subset covers every subset")

    @settings(max_examples=15, deadline=None)
    @given(
        subset=st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True),
        negative=st.lists(st.booleans(), min_size=n, max_size=n),
    )
    def run(subset: list[int], negative: list[bool]) -> None:
        check_subset(case, [i - n if neg else i for i, neg in zip(subset, negative, strict=False)])

    run()
