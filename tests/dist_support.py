"""Run test scenarios as a distributed job: spawned processes, gloo on CPU, one spawn shared by many tests.

Starting a process that imports torch costs seconds, so a test module spawns its ranks once, every
rank runs every scenario in the same order (their collectives pair up), and each test reads the
outcome of its own scenario. A rank that fails a scenario records the traceback and exits at once:
its peers then fail fast on the closed connection instead of waiting out the collective timeout.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs

WORLD_SIZE = 2
JOB_TIMEOUT_S = 300.0  # the whole job; a hung rank is killed after this
COLLECTIVE_TIMEOUT_S = 60  # one collective waiting for a peer

Data = dict[str, object]  # what a scenario hands back to the test: JSON values


@attrs.frozen
class Scenario:
    """One named step of the job: fn(*args) runs in every rank, returns JSON data (or None) or raises."""

    name: str
    fn: Callable[..., Data | None]
    args: tuple[object, ...] = ()


@attrs.frozen
class JobReport:
    """Every rank's outcome of every scenario, and how each process ended."""

    outcomes: Mapping[int, Mapping[str, Mapping[str, object]]]  # rank -> scenario -> {"data"} or {"error"}
    exitcodes: Mapping[int, int | None]
    log: str

    def data(self, scenario: str) -> list[Data]:
        """Each rank's data from scenario, in rank order; fails the test with every rank's story if any rank failed."""
        problems: list[str] = []
        found: list[Data] = []
        for rank in range(len(self.exitcodes)):
            outcome = self.outcomes.get(rank, {}).get(scenario)
            if outcome is None:
                problems.append(f"rank {rank}: no outcome (process exit code {self.exitcodes[rank]})")
            elif "error" in outcome:
                problems.append(f"rank {rank}:\n{outcome['error']}")
            else:
                data = outcome.get("data")
                found.append(data if isinstance(data, dict) else {})
        if problems:
            raise AssertionError(f"scenario {scenario!r} failed\n" + "\n".join(problems) + f"\n{self.log}")
        return found


def run_job(scenarios: Sequence[Scenario], workdir: Path, *, world_size: int = WORLD_SIZE) -> JobReport:
    """Spawn world_size ranks that run the scenarios in order; collect their outcomes (kills a hung job)."""
    names = [s.name for s in scenarios]
    assert len(set(names)) == len(names), f"scenario names repeat: {names}"
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")  # fork would copy the parent's torch threads and state
    procs = [
        ctx.Process(target=_rank_main, args=(rank, world_size, str(workdir), list(scenarios)), daemon=True)
        for rank in range(world_size)
    ]
    started = time.monotonic()
    for p in procs:
        p.start()
    deadline = started + JOB_TIMEOUT_S
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    hung = [rank for rank, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=10)
    outcomes = {rank: _read_outcomes(workdir, rank) for rank in range(world_size)}
    seconds = {name: o.get("seconds") for name, o in outcomes[0].items()}
    log = f"job of {world_size} ranks ran {time.monotonic() - started:.1f}s; rank 0's scenarios took {seconds}"
    if hung:
        log += f"; ranks {hung} were still running after {JOB_TIMEOUT_S:.0f}s and were killed"
    return JobReport(outcomes=outcomes, exitcodes={r: p.exitcode for r, p in enumerate(procs)}, log=log)


def _outcome_file(workdir: str | Path, rank: int) -> Path:
    return Path(workdir) / f"rank{rank}.json"


def _read_outcomes(workdir: Path, rank: int) -> dict[str, dict[str, object]]:
    try:
        found = json.loads(_outcome_file(workdir, rank).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write_outcomes(workdir: str, rank: int, outcomes: dict[str, dict[str, object]]) -> None:
    # written after every scenario and replaced atomically, so a rank that dies later still leaves its story
    path = _outcome_file(workdir, rank)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcomes), encoding="utf-8")
    os.replace(tmp, path)


def _rank_main(rank: int, world_size: int, workdir: str, scenarios: list[Scenario]) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # the ranks share the machine's cores
    outcomes: dict[str, dict[str, object]] = {}
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{workdir}/rendezvous",  # a file, not a port: nothing to collide with
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        )
    except BaseException:
        for s in scenarios:
            outcomes[s.name] = {"error": f"rank {rank} could not join the job:\n{traceback.format_exc()}"}
        _write_outcomes(workdir, rank, outcomes)
        os._exit(1)
    for i, s in enumerate(scenarios):
        began = time.monotonic()
        try:
            data = s.fn(*s.args)
            json.dumps(data)  # fails here, inside the scenario, if the data cannot reach the test
            outcomes[s.name] = {"data": data, "seconds": round(time.monotonic() - began, 2)}
        except BaseException:
            outcomes[s.name] = {"error": traceback.format_exc()}
            for later in scenarios[i + 1 :]:
                outcomes[later.name] = {"error": f"not run: {s.name!r} failed on rank {rank} before it"}
            _write_outcomes(workdir, rank, outcomes)
            # leave now: the peers fail fast on the closed connection instead of waiting in a collective
            os._exit(1)
        _write_outcomes(workdir, rank, outcomes)
    dist.destroy_process_group()
