"""How the suite visits the registered names: every one on the meta device, drawn ones for real, or all of them.

Tier 1 (tests/every_name): every registered name in every run, on the meta device (no memory, no init).
Tier 2 (the per-name properties in tests/property and tests/unit): the names tests/draw.py draws from the
run's Hypothesis seed, every family in every run; with --all-names (`make test-all`) every name.

A test asks for names with a marker; conftest.py parametrises its `name` argument:

    @pytest.mark.every_name                    every registered name (tier 1: meta builds, cheap checks)
    @pytest.mark.drawn_names                   the run's draw (every name with --all-names)
    @pytest.mark.drawn_names(family="vit")     the draw's members of one family (zoo.list_modules() names it)
    @pytest.mark.drawn_names(scope="module")   parametrised at module scope, for a module-scoped fixture to use

A drawn model above PARAM_BUDGET parameters is built smaller through its own constructor keywords
(REDUCERS, by family: fewer blocks, then narrower), never skipped without a reason: plan() says how.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import pytest

import draw
import zoo
from refdata import reference, reference_path
from zoo.domain.values import ModelSpec

ALL_NAMES_OPTION = "--all-names"
# Parameters and buffers a drawn model may hold as built; above it the drawn tier builds it smaller. A
# model of 100M float32 parameters is 400 MB; the properties copy it (deepcopy, fusion, sync batch norm)
# and a worker keeps a few built models (modelcache.BUDGET), so two workers stay within a few GB.
PARAM_BUDGET = int(os.environ.get("ZOO_TEST_PARAM_BUDGET", 100_000_000))


# what conftest.py parametrised each every_name test with (by node id): the coverage check reads it
EVERY_NAME_CASES = pytest.StashKey[dict[str, list[str]]]()


@functools.cache
def families() -> dict[str, tuple[str, ...]]:
    """Every family (zoo.list_modules()) and its registered names."""
    return {module: tuple(zoo.list_models(module=module)) for module in zoo.list_modules()}


@functools.cache
def family_of(name: str) -> str:
    """The family (zoo.list_modules() name) that registers name."""
    found = [module for module, names in families().items() if name in names]
    assert len(found) == 1, f"{name!r} is in families {found}"
    return found[0]


def every_name(family: str | None = None) -> list[str]:
    """Every registered name (of one family)."""
    if family is None:
        return zoo.list_models()
    assert family in families(), f"no family {family!r}; the families are {sorted(families())}"
    return list(families()[family])


def run_seed(config: pytest.Config) -> object:
    """The run's Hypothesis seed (--hypothesis-seed), or None without one (the draw then uses draw.FALLBACK_SEED)."""
    return config.getoption("hypothesis_seed", default=None)


def all_names(config: pytest.Config) -> bool:
    """Whether the run turns the draw off (--all-names: `make test-all`)."""
    return bool(config.getoption("all_names", default=False))


def drawn_names(config: pytest.Config, family: str | None = None) -> list[str]:
    """The names the run draws (of one family); every name with --all-names."""
    if all_names(config):
        return every_name(family)
    names = draw.drawn(families(), run_seed(config))
    return names if family is None else [n for n in names if n in every_name(family)]


# -- models above the budget ---------------------------------------------------------------------


def reference_size(name: str) -> int:
    """Parameters and buffers of name's model, from its reference state_dict (a meta build without one)."""
    if reference_path(name) is None:
        from meta_models import meta_build, size

        return size(meta_build(name).classifier)
    return sum(math.prod(shape) for shape in reference(name)["state_dict"].values())


@attrs.frozen
class Plan:
    """How the drawn tier builds a registered name: with which extra model keywords, or why not at all."""

    name: str
    size: int  # parameters and buffers of the registered model
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)  # the reduction's constructor keywords ({}: full size)
    reduced_size: int | None = None
    skip: str | None = None  # set: the drawn tier cannot build it within the budget, and says why

    def describe(self) -> str:
        """One line for the run's header and a failure's report."""
        if self.skip is not None:
            return f"{self.name}: skipped: {self.skip}"
        shown = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.name}: {self.size / 1e6:.0f}M parameters, built with {shown} ({self.reduced_size or 0:,})"


def over_budget(name: str) -> bool:
    """Whether the drawn tier builds name smaller than registered."""
    return reference_size(name) > PARAM_BUDGET


@functools.cache
def plan(name: str) -> Plan:
    """name's Plan: full size within PARAM_BUDGET, else the first of its family's reductions that fits it."""
    from meta_models import meta_size

    size = reference_size(name)
    if size <= PARAM_BUDGET:
        return Plan(name, size)
    family = family_of(name)
    reduce = REDUCERS.get(family)
    if reduce is None:
        return Plan(name, size, skip=f"{size:,} parameters, above the budget of {PARAM_BUDGET:,}, and no reduction is "
                    f"known for family {family!r} (add one to tests/tiers.py REDUCERS)")  # fmt: skip
    spec = zoo.api.default_zoo().get_spec(name)
    tried = []
    for kwargs in reduce(constructor_args(spec)):
        reduced = meta_size(name, kwargs)
        if reduced <= PARAM_BUDGET:
            return Plan(name, size, kwargs, reduced)
        tried.append(f"{kwargs} ({reduced:,})")
    return Plan(name, size, skip=f"{size:,} parameters, above the budget of {PARAM_BUDGET:,}; no reduction of family "
                f"{family!r} brings it within: {'; '.join(tried)}")  # fmt: skip


def build_kwargs(name: str) -> dict[str, Any]:
    """The model keywords the drawn tier builds name with (its reduction's, if any); skips with plan's reason."""
    p = plan(name)
    if p.skip is not None:
        pytest.skip(p.skip)
    return dict(p.kwargs)


def constructor_args(spec: ModelSpec) -> dict[str, object]:
    """The keywords spec's constructor runs with by default: its signature's defaults, then the spec's model_args."""
    defaults = {
        p.name: p.default
        for p in inspect.signature(spec.constructor).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **spec.model_args}


# Each family's reductions, smallest change first: fewer blocks (the stem, the stages and their taps stay),
# then narrower. The first that brings a model within PARAM_BUDGET is used.
Reduction = Callable[[Mapping[str, object]], Iterator[dict[str, Any]]]


def _ones(value: object) -> tuple[int, ...]:
    assert isinstance(value, Sequence), value
    return tuple(1 for _ in value)


def _resnet(args: Mapping[str, object]) -> Iterator[dict[str, Any]]:
    yield {"layers": _ones(args["layers"])}


def _densenet(args: Mapping[str, object]) -> Iterator[dict[str, Any]]:
    yield {"block_config": _ones(args["block_config"])}


def _xception(args: Mapping[str, object]) -> Iterator[dict[str, Any]]:
    blocks = args["block_cfg"]
    assert isinstance(blocks, Sequence)
    # the middle flow repeats one block: keep one of each run of equal blocks
    yield {"block_cfg": tuple(b for i, b in enumerate(blocks) if i == 0 or b != blocks[i - 1])}


def _cspnet(args: Mapping[str, object]) -> Iterator[dict[str, Any]]:
    stages = args["stage_cfgs"]
    assert isinstance(stages, Sequence)
    yield {"stage_cfgs": tuple(attrs.evolve(s, depth=1) for s in stages)}


def _vit(args: Mapping[str, object]) -> Iterator[dict[str, Any]]:
    depth, width, heads = args["depth"], args["embed_dim"], args["num_heads"]
    assert isinstance(depth, int), depth
    assert isinstance(width, int), width
    assert isinstance(heads, int), heads
    yield {"depth": min(depth, 2)}
    for k in (2, 4, 8, 16):
        if heads % k == 0:  # the heads keep their width
            yield {"depth": min(depth, 2), "embed_dim": width // k, "num_heads": heads // k}


def _efficientnet(args: Mapping[str, object]) -> Iterator[dict[str, Any]]:
    yield {"depth_multiplier": 0.1}
    width = args["channel_multiplier"]
    assert isinstance(width, float)
    for k in (2, 4, 8):
        yield {"depth_multiplier": 0.1, "channel_multiplier": max(0.1, width / k)}


def _mobilenetv3(args: Mapping[str, object]) -> Iterator[dict[str, Any]]:
    width = args["channel_multiplier"]
    assert isinstance(width, float)
    for k in (2, 4, 8):
        yield {"channel_multiplier": max(0.1, width / k)}


def _convnext(args: Mapping[str, object]) -> Iterator[dict[str, Any]]:
    depths, dims = args["depths"], args["dims"]
    assert isinstance(dims, Sequence)
    yield {"depths": _ones(depths)}
    for k in (2, 4, 8):
        yield {"depths": _ones(depths), "dims": tuple(max(8, int(d) // k) for d in dims)}


def _regnet(args: Mapping[str, object]) -> Iterator[dict[str, Any]]:
    # scaling w0 and wa together keeps every block's width ratio, so the stages stay as they are, narrower
    cfg = args["cfg"]
    for k in (2, 4, 8):
        w0 = max(8, round(getattr(cfg, "w0") / k / 8) * 8)  # noqa: B009  # a RegNetCfg (attrs)
        yield {
            "cfg": attrs.evolve(
                cfg,  # type: ignore[misc]  # an attrs instance
                w0=w0,
                wa=getattr(cfg, "wa") / k,  # noqa: B009
                group_size=max(1, getattr(cfg, "group_size") // k),  # noqa: B009
            )
        }


REDUCERS: dict[str, Reduction] = {
    "resnet": _resnet,
    "densenet": _densenet,
    "xception": _xception,
    "cspnet": _cspnet,
    "vit": _vit,
    "efficientnet": _efficientnet,
    "mobilenetv3": _mobilenetv3,
    "convnext": _convnext,
    "regnet": _regnet,
}
