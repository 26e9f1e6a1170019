"""Shared test settings: Hypothesis profiles sized for CI (2 cores, 20 minutes for everything)."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

import draw
import tiers
import zoo
from modelcache import forget_built
from weights_support import CheckpointServer, isolated_cache
from zoo.archs.resnet import ResNet

# Not derandomized: each run draws new cases. A failure prints the falsifying example and the
# @reproduce_failure blob; `pytest --hypothesis-seed=N` replays a whole run.
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=10,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def server() -> Iterator[CheckpointServer]:
    """A loopback HTTP server serving checkpoints and hub repos the test adds, counting requests."""
    with CheckpointServer() as s:
        yield s


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: CheckpointServer) -> Path:
    """Empty zoo and Hugging Face caches (ZOO_CACHE_DIR, HF_HUB_CACHE); HF_ENDPOINT on the loopback server."""
    return isolated_cache(tmp_path, monkeypatch, server)


@pytest.fixture(scope="module")
def r18() -> ResNet:
    """resnet18, seeded and in eval mode, built once per test module (a module may change its own)."""
    torch.manual_seed(0)
    model = zoo.create_model("resnet18")
    assert isinstance(model, ResNet)
    return model.eval()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_thread")`).

    Small forwards stall at multi-thread barriers on a busy CI; torch.export's tracing is single-threaded anyway.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def release_built_models() -> Iterator[None]:
    """Drop the models a test module built (modelcache.built) when it ends: the next module builds its own."""
    yield
    forget_built()


_MODEL_RANK = {name: i for i, name in enumerate(zoo.list_models())}
# Work units per test module for pytest-xdist (--dist loadgroup): a module's tests go to one worker as one unit,
# except those of registered names, which go as SHARDS units of consecutive names, so that a module visiting
# every name (tier 1) runs on both workers
SHARDS = 4


def _model_name(item: pytest.Item) -> str | None:
    """The registered model a parametrised test is for (its `name`, or the first part of its id), else None."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    name = callspec.params.get("name")
    if isinstance(name, str) and name in _MODEL_RANK:
        return name
    first = str(callspec.id).split("-")[0]
    return first if first in _MODEL_RANK else None


def _model_rank(item: pytest.Item) -> int:
    name = _model_name(item)
    return -1 if name is None else _MODEL_RANK[name]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        tiers.ALL_NAMES_OPTION,
        action="store_true",
        dest="all_names",
        help="run the drawn tier's properties on every registered name, not the run's draw (make test-all)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "every_name(family=None): parametrise `name` with every registered name")
    config.addinivalue_line(
        "markers",
        "drawn_names(family=None, scope=None, extra=()): parametrise `name` with the run's draw (tests/tiers.py)",
    )
    config.stash[tiers.EVERY_NAME_CASES] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `name` for the tests marked every_name or drawn_names (see tests/tiers.py)."""
    if "name" not in metafunc.fixturenames:
        return
    every = metafunc.definition.get_closest_marker("every_name")
    drawn = metafunc.definition.get_closest_marker("drawn_names")
    if every is None and drawn is None:
        return
    assert every is None or drawn is None, f"{metafunc.definition.nodeid}: marked both every_name and drawn_names"
    marker = every if every is not None else drawn
    assert marker is not None
    family = marker.kwargs.get("family")
    if every is not None:
        names = tiers.every_name(family)
        metafunc.config.stash[tiers.EVERY_NAME_CASES][metafunc.definition.nodeid] = names
        marks = getattr(metafunc.module, "CASE_MARKS", {}).get(metafunc.function.__name__, {})
        params = [pytest.param(n, id=n, marks=marks.get(n, ())) for n in names]
    else:
        names = [*tiers.drawn_names(metafunc.config, family), *marker.kwargs.get("extra", ())]
        params = [pytest.param(n, id=n) for n in names]
    metafunc.parametrize("name", params, scope=marker.kwargs.get("scope"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The run's draw, first thing in the output (also last: see pytest_terminal_summary)."""
    seed = tiers.run_seed(config)
    if tiers.all_names(config):
        lines = [f"names: every registered name ({len(tiers.every_name())}) in every tier (--all-names)"]
    else:
        names = tiers.drawn_names(config)
        number = draw.seed_number(seed)
        given = "" if seed is not None else ", as no --hypothesis-seed was given"
        runs = draw.runs_of(tiers.families())
        lines = [
            f"names: every registered name ({len(tiers.every_name())}) on meta; drawn for real by seed {number} "
            f"(slot {draw.slot(seed, runs)} of {runs}{given}; replay: make unit SEED={number}): {', '.join(names)}"
        ]
    over = [n for n in tiers.drawn_names(config) if tiers.over_budget(n)]
    if over:
        lines.append(f"above the budget of {tiers.PARAM_BUDGET:,} parameters and buffers, built smaller:")
        lines.extend(f"  {tiers.plan(n).describe()}" for n in over)
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The run's draw again at the end, shown with -q too: what `make unit SEED=N` replays."""
    terminalreporter.section("names")
    for line in pytest_report_header(config):
        terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed drawn case says how to draw it again (the seed) and how its model was built."""
    report: pytest.TestReport = yield
    if report.failed and item.get_closest_marker("drawn_names") is not None:
        name = _model_name(item)
        seed = draw.seed_number(tiers.run_seed(item.config))
        lines = [f"drawn by seed {seed}: replay with `make unit SEED={seed}` (or pytest --hypothesis-seed={seed})"]
        if name is not None and tiers.over_budget(name):
            lines.append(tiers.plan(name).describe())
        report.sections.append(("drawn case", "\n".join(lines)))
    return report


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Within each test module, the tests of one model run one after another (the rest keep their order).

    So modelcache.built holds the models of the tests running now, not every model a module visits.
    The order is a function of the collected items alone, so every pytest-xdist worker agrees on it.
    Each item gets its pytest-xdist work unit (see SHARDS).
    """
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        first.setdefault(item.nodeid.split("::")[0], i)
    position = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda it: (first[it.nodeid.split("::")[0]], _model_rank(it), position[id(it)]))
    for item in items:
        module = item.nodeid.split("::")[0]
        rank = _model_rank(item)
        unit = module if rank < 0 else f"{module}:{rank * SHARDS // len(_MODEL_RANK)}"
        item.add_marker(pytest.mark.xdist_group(unit))
