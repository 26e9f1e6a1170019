"""Feature extractors train under DistributedDataParallel with find_unused_parameters=False (gloo, 2 CPU processes)."""

from __future__ import annotations

import datetime
from pathlib import Path

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn
from torch.nn.parallel import DistributedDataParallel

import zoo
from zoo.domain import FEATURE_CLASSES

WORLD_SIZE = 2
OUT_INDICES = [(0,), (1, 3), (-1,), (0, 1, 2, 3, 4)]
STEPS = 2  # DDP reports parameters left out of a backward when the next forward starts


def _train(rank: int, init_file: str) -> None:
    """One process: every feature_cls and out_indices, STEPS SGD steps each, replicas checked equal after."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        for feature_cls in FEATURE_CLASSES:
            for out_indices in OUT_INDICES:
                torch.manual_seed(0)  # the same initial weights in both processes
                extractor = zoo.create_model(
                    "resnet18", features_only=True, feature_cls=feature_cls, out_indices=out_indices
                )
                ddp = DistributedDataParallel(extractor, find_unused_parameters=False)
                optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
                generator = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
                for _ in range(STEPS):
                    optimizer.zero_grad()
                    out = ddp(torch.randn(2, 3, 64, 64, generator=generator))
                    taps = list(out.values()) if isinstance(out, dict) else out
                    assert len(taps) == len(out_indices)
                    torch.autograd.backward(torch.stack([t.square().mean() for t in taps]).sum())
                    optimizer.step()
                # gradients were averaged across ranks, so the replicas took the same steps
                flat = torch.cat([p.detach().flatten() for p in extractor.parameters()])
                gathered = [torch.empty_like(flat) for _ in range(WORLD_SIZE)]
                dist.all_gather(gathered, flat)
                assert torch.equal(gathered[0], gathered[1]), (feature_cls, out_indices)
    finally:
        dist.destroy_process_group()


def test_every_extractor_trains_under_ddp_without_unused_parameters(tmp_path: Path) -> None:
    # a failure in either process (DDP's unused-parameter error included) raises here with its traceback
    spawn(_train, args=(str(tmp_path / "rendezvous"),), nprocs=WORLD_SIZE, join=True)  # type: ignore[no-untyped-call]  # torch leaves spawn unannotated
