"""The suite's own rules: which names a run draws (tests/draw.py), and how a model above the budget is built."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import draw
import tiers
import zoo
from meta_models import meta_build, on_meta, size
from refdata import ROOT

FAMILIES = tiers.families()
NAMES = tiers.every_name()
RUNS = draw.runs_of(FAMILIES)
PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])  # a subprocess imports this worktree's zoo


def test_every_run_draws_every_family_and_any_runs_consecutive_seeds_draw_every_name() -> None:
    for start in (0, 1, 7, 2**32 - 5, 987654321):
        runs = [draw.drawn(FAMILIES, start + i) for i in range(RUNS)]
        for names in runs:
            assert {tiers.family_of(n) for n in names} == set(FAMILIES)
        assert set().union(*runs) == set(NAMES)


def test_a_family_draws_other_members_from_one_run_to_the_next() -> None:
    for seed in range(3 * RUNS):
        now, then = draw.drawn(FAMILIES, seed), draw.drawn(FAMILIES, seed + 1)
        for family, members in FAMILIES.items():
            if len(members) > 1:
                assert {n for n in now if n in members} != {n for n in then if n in members}, (family, seed)


def test_a_run_draws_its_share_of_each_family() -> None:
    for seed in range(RUNS):
        names = draw.drawn(FAMILIES, seed)
        for members in FAMILIES.values():
            assert 1 <= len(set(names) & set(members)) <= math.ceil(len(members) / RUNS)


def test_a_run_draws_as_many_names_at_1000_names_as_today() -> None:
    # the zoo grows: the slots grow with it, so a run's drawn tier stays PER_SLOT names plus one per family
    sizes = (400, 230, 150, 90, 60, 35, 20, 9, 4, 2)
    grown = {f"family{i}": [f"family{i}_m{j:03d}" for j in range(n)] for i, n in enumerate(sizes)}
    runs = draw.runs_of(grown)
    assert (sum(sizes), runs) == (1000, 1000 // draw.PER_SLOT)
    seen: set[str] = set()
    for seed in range(7, 7 + runs):
        names = draw.drawn(grown, seed)
        assert len(names) <= draw.PER_SLOT + len(grown)
        assert {n.split("_")[0] for n in names} == set(grown)
        seen.update(names)
    assert len(seen) == 1000
    assert draw.runs_for(len(NAMES)) == max(draw.MIN_RUNS, math.ceil(len(NAMES) / draw.PER_SLOT)) == RUNS


def test_the_draw_is_a_function_of_the_seed_and_the_names_alone() -> None:
    assert draw.drawn(FAMILIES, 12345) == draw.drawn(FAMILIES, "12345") == draw.drawn(FAMILIES, " 12345")
    assert draw.drawn(FAMILIES, None) == draw.drawn(FAMILIES, draw.FALLBACK_SEED)
    shuffled = {f: tuple(reversed(m)) for f, m in reversed(list(FAMILIES.items()))}
    for seed in (0, 5, "not a number", 2**40 + 3):
        assert draw.drawn(shuffled, seed) == draw.drawn(FAMILIES, seed)
    # every pytest-xdist worker is another process: another string hash seed must not change the draw
    code = "import draw, tiers; print(draw.drawn(tiers.families(), 'a seed'), draw.drawn(tiers.families(), 99))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": PYTHONPATH}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{draw.drawn(FAMILIES, 'a seed')} {draw.drawn(FAMILIES, 99)}"


def test_the_readme_states_the_number_of_runs_that_draws_every_name() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"R = max({draw.MIN_RUNS}, ⌈names / {draw.PER_SLOT}⌉) slots" in readme
    assert f"at most {draw.PER_SLOT} names plus one per family" in readme


def test_a_failing_drawn_case_names_its_seed_for_the_replay(tmp_path: Path) -> None:
    test = tmp_path / "test_drawn_failure.py"
    test.write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.drawn_names(family="xception")
            def test_fails(name):
                assert name == "no such name"
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    args = ["-p", "conftest", "-p", "no:cacheprovider", "-q", "--hypothesis-seed=4242", str(test)]
    run = subprocess.run([sys.executable, "-m", "pytest", *args], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    (drawn,) = [n for n in draw.drawn(FAMILIES, 4242) if n in FAMILIES["xception"]]
    assert f"test_fails[{drawn}]" in run.stdout
    assert "replay with `make unit SEED=4242`" in run.stdout
    assert f"slot {draw.slot(4242, RUNS)} of {RUNS}" in run.stdout  # and the header says what the run drew


# -- above the budget ------------------------------------------------------------------------


def test_every_name_above_the_budget_has_a_reduction_within_it() -> None:
    for name in NAMES:
        if tiers.over_budget(name):
            plan = tiers.plan(name)
            assert plan.skip is None, plan.skip
            assert plan.reduced_size is not None
            assert plan.reduced_size <= tiers.PARAM_BUDGET


@pytest.mark.parametrize("family", sorted(set(tiers.REDUCERS) & set(FAMILIES)))
def test_each_familys_first_reduction_builds_a_smaller_model_of_its_kind(family: str) -> None:
    name = max(FAMILIES[family], key=tiers.reference_size)  # the family's largest
    spec = zoo.api.default_zoo().get_spec(name)
    kwargs = next(tiers.REDUCERS[family](tiers.constructor_args(spec)))
    with on_meta():
        reduced = zoo.create_model(name, **kwargs)
    full = meta_build(name).classifier
    assert type(reduced) is type(full)
    assert size(reduced) < size(full) == tiers.reference_size(name)
    assert reduced.feature_info
