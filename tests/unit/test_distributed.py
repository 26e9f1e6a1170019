"""zoo models in a distributed job: DDP, FSDP2, SyncBatchNorm and pretrained downloads (2 processes, gloo, CPU).

The ranks are spawned once for the module (tests/dist_support.py); each test checks its own scenario.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import zoo
from dist_support import Data, JobReport, Scenario, run_job
from weights_support import CheckpointServer, cache_files, digests, safetensors_bytes
from zoo.archs.layers import BatchNormAct2d, InPlaceAbn2d, SyncBatchNormAct
from zoo.archs.resnet import ResNet
from zoo.domain import FEATURE_CLASSES

STEPS = 2  # DDP reports parameters left out of a backward when the next forward starts
# every feature_cls trains with the stem tap alone (everything after it unused) and with one other selection
OUT_INDICES: dict[str, tuple[tuple[int, ...], ...]] = {
    "list": ((0,), (1, 3)),
    "dict": ((0,), (0, 1, 2, 3, 4)),
    "hook": ((0,), (-1,)),
    "getter": ((0,), (2, -2)),
}
CHECKPOINT = "/timm/resnet18.safetensors"


# -- what every rank runs ----------------------------------------------------------------------


def _flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _assert_same_on_every_rank(t: torch.Tensor, what: str) -> None:
    gathered = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, t)
    for rank, other in enumerate(gathered):
        assert torch.equal(other, gathered[0]), f"{what} differ between rank 0 and rank {rank}"


def _batch(generator: torch.Generator, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=generator)


def _train_ddp(
    model: nn.Module, loss_of: Callable[[object], torch.Tensor], *, forward_sync_buffers: bool = True
) -> None:
    """STEPS SGD steps under DDP on each rank's own batches; the replicas must end up equal, and changed."""
    start = _flat_params(model).clone()
    ddp = DistributedDataParallel(model, find_unused_parameters=False, forward_sync_buffers=forward_sync_buffers)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(100 + dist.get_rank())  # each rank its own batch
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.autograd.backward(loss_of(ddp(_batch(generator))))
        optimizer.step()
    after = _flat_params(model)
    assert not torch.equal(after, start), "the steps left the weights unchanged"
    # gradients were averaged across ranks, so the replicas took the same steps
    _assert_same_on_every_rank(after, "parameters after training")


def _pretrained(cache: str, url: str) -> Data:
    os.environ["ZOO_CACHE_DIR"] = cache
    os.environ.pop("ZOO_OFFLINE", None)
    dist.barrier()  # every rank asks for the weights at the same moment
    model = zoo.create_model("resnet18", pretrained=True, pretrained_cfg_overlay={"url": url, "hf_hub_id": ""})
    return {"digests": digests(model.state_dict())}


def _ddp_classifier() -> None:
    torch.manual_seed(0)  # the same initial weights in every rank
    model = zoo.create_model("resnet18", num_classes=10)
    generator = torch.Generator().manual_seed(dist.get_rank())

    def loss_of(out: object) -> torch.Tensor:
        assert isinstance(out, torch.Tensor)
        assert out.shape == (2, 10)
        return F.cross_entropy(out, torch.randint(0, 10, (2,), generator=generator))

    _train_ddp(model, loss_of)


def _ddp_features(feature_cls: str) -> None:
    for out_indices in OUT_INDICES[feature_cls]:
        torch.manual_seed(0)
        extractor = zoo.create_model("resnet18", features_only=True, feature_cls=feature_cls, out_indices=out_indices)

        def loss_of(out: object, n: int = len(out_indices)) -> torch.Tensor:
            taps = list(out.values()) if isinstance(out, dict) else out
            assert isinstance(taps, list)
            assert len(taps) == n
            return torch.stack([t.square().mean() for t in taps]).sum()

        _train_ddp(extractor, loss_of)


def _fsdp2() -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    torch.manual_seed(0)
    model = zoo.create_model("resnet18", num_classes=10)
    assert isinstance(model, ResNet)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        fully_shard(stage)
    fully_shard(model)
    params = list(model.parameters())
    assert all(isinstance(p, DTensor) for p in params)
    held = sum(p.to_local().numel() for p in params if isinstance(p, DTensor))
    total = sum(p.numel() for p in params)
    assert held < 0.6 * total, f"rank holds {held} of {total} parameter values: not sharded"

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(dist.get_rank())
    torch.autograd.backward(F.cross_entropy(model(_batch(generator)), torch.randint(0, 10, (2,), generator=generator)))
    optimizer.step()

    full: dict[str, torch.Tensor] = {}
    for name, value in get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)).items():
        assert type(value) is torch.Tensor, f"{name} gathered as a {type(value).__name__}, not a plain tensor"
        full[name] = value
    assert sorted(full) == sorted(start), "the gathered state_dict names differ from the unsharded model's"
    assert any(not torch.equal(full[k], start[k]) for k in start), "the step left the weights unchanged"
    plain = zoo.create_model("resnet18", num_classes=10)
    plain.load_state_dict(full)  # strict: every key present, none extra, every shape right
    _assert_same_on_every_rank(_flat_params(plain), "gathered full state_dicts")
    x = _batch(torch.Generator().manual_seed(7))  # the same input in every rank
    model.eval()
    plain.eval()
    with torch.no_grad():
        sharded_out = model(x)
        plain_out = plain(x)
    torch.testing.assert_close(plain_out, sharded_out, rtol=0, atol=0)


def _norm_stack() -> nn.Sequential:
    # every kind of norm convert_sync_batchnorm replaces, one with a cumulative running average
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        BatchNormAct2d(8),
        nn.Conv2d(8, 8, 1),
        InPlaceAbn2d(8),
        nn.Conv2d(8, 6, 1),
        nn.BatchNorm2d(6, momentum=None),
    ).train()


def _sync_bn_matches_one_process() -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # everything below is the same in every rank
    reference = _norm_stack()
    synced = zoo.convert_sync_batchnorm(copy.deepcopy(reference))
    whole = torch.randn(2 * world, 3, 9, 7, requires_grad=True)
    weights = torch.randn(2 * world, 6, 7, 5)
    for _ in range(2):  # the second pass runs on updated running statistics and counters
        expected = reference(whole)
        torch.autograd.backward((expected * weights).sum())
    part = slice(2 * rank, 2 * rank + 2)
    mine = whole.detach()[part].clone().requires_grad_()
    for _ in range(2):
        out = synced(mine)
        torch.autograd.backward((out * weights[part]).sum())

    torch.testing.assert_close(out, expected[part], rtol=1e-4, atol=1e-5)
    assert mine.grad is not None
    assert whole.grad is not None
    torch.testing.assert_close(mine.grad, whole.grad[part], rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(synced.named_parameters(), reference.parameters(), strict=True):
        assert p.grad is not None
        assert q.grad is not None
        grad = p.grad.clone()
        dist.all_reduce(grad)  # each rank holds the gradient of its own part of the loss
        torch.testing.assert_close(grad, q.grad, rtol=1e-4, atol=1e-4, msg=name)
    synced_state, reference_state = synced.state_dict(), reference.state_dict()
    assert list(synced_state) == list(reference_state)
    for name, t in synced_state.items():
        torch.testing.assert_close(t, reference_state[name], rtol=1e-5, atol=1e-6, msg=name)


def _sync_bn_trains_under_ddp() -> None:
    torch.manual_seed(0)
    model = zoo.convert_sync_batchnorm(zoo.create_model("densenet121", num_classes=10))
    assert any(isinstance(m, SyncBatchNormAct) and isinstance(m.act, nn.ReLU) for m in model.modules())

    def loss_of(out: object) -> torch.Tensor:
        assert isinstance(out, torch.Tensor)
        return out.square().mean()

    # buffers not copied from rank 0 before each forward: the running statistics agree only if the norms synchronised
    _train_ddp(model, loss_of, forward_sync_buffers=False)
    stats = torch.cat([b.flatten().double() for b in model.buffers()])
    _assert_same_on_every_rank(stats, "running statistics (ranks saw different batches)")


# -- the job, once for the module ----------------------------------------------------------------


@attrs.frozen
class Job:
    report: JobReport
    source_digests: dict[str, str]
    downloads: int
    cache_files: list[Path]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    root = tmp_path_factory.mktemp("distributed")
    torch.manual_seed(0)
    source = zoo.create_model("resnet18")
    with torch.no_grad():  # values a fresh model would not have, so only the served weights match
        for t in source.state_dict().values():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5)
    with CheckpointServer() as server:
        # slow: the download is still running when the other rank asks
        url = server.add(CHECKPOINT, safetensors_bytes(source.state_dict()), mode="slow")
        scenarios = [
            Scenario("pretrained", _pretrained, (str(root / "cache"), url)),
            Scenario("ddp_classifier", _ddp_classifier),
            *(Scenario(f"ddp_features_{c}", _ddp_features, (c,)) for c in FEATURE_CLASSES),
            Scenario("fsdp2", _fsdp2),
            Scenario("sync_bn_math", _sync_bn_matches_one_process),
            Scenario("sync_bn_ddp", _sync_bn_trains_under_ddp),
        ]
        report = run_job(scenarios, root / "job")
        downloads = server.count(CHECKPOINT)
    return Job(report, digests(source.state_dict()), downloads, cache_files(root / "cache"))


def test_pretrained_in_every_rank_downloads_once_and_every_rank_gets_the_whole_file(job: Job) -> None:
    per_rank = job.report.data("pretrained")
    assert job.downloads == 1
    assert len(job.cache_files) == 1  # the complete file, and no partial download left beside it
    for data in per_rank:
        assert data["digests"] == job.source_digests


def test_ddp_trains_a_classifier(job: Job) -> None:
    job.report.data("ddp_classifier")


@pytest.mark.parametrize("feature_cls", FEATURE_CLASSES)
def test_ddp_trains_every_extractor_without_unused_parameters(job: Job, feature_cls: str) -> None:
    job.report.data(f"ddp_features_{feature_cls}")


def test_fsdp2_trains_per_stage_and_its_full_state_dict_loads_into_a_plain_model(job: Job) -> None:
    job.report.data("fsdp2")


def test_sync_batchnorm_on_parts_of_a_batch_equals_batchnorm_on_the_whole(job: Job) -> None:
    job.report.data("sync_bn_math")


def test_sync_batchnorm_model_trains_under_ddp_with_shared_statistics(job: Job) -> None:
    job.report.data("sync_bn_ddp")
