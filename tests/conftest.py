"""Shared test settings: Hypothesis profiles sized for CI (2 cores, 20 minutes for everything)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

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
    gc.collect()


_MODEL_RANK = {name: i for i, name in enumerate(zoo.list_models())}


def _model_rank(item: pytest.Item) -> int:
    """The registered model a parametrised test is for (the first part of its id: 'resnet18-cpu'), else -1."""
    callspec = getattr(item, "callspec", None)
    return -1 if callspec is None else _MODEL_RANK.get(str(callspec.id).split("-")[0], -1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Within each test module, the tests of one model run one after another (the rest keep their order).

    So modelcache.built holds the models of the tests running now, not every model a module visits.
    The order is a function of the collected items alone, so every pytest-xdist worker agrees on it.
    """
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        first.setdefault(item.nodeid.split("::")[0], i)
    position = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda it: (first[it.nodeid.split("::")[0]], _model_rank(it), position[id(it)]))
