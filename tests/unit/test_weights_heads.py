"""Applying checkpoints made by users: their class counts, older layouts, other dtypes; meta builds under threads."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from weights_support import TINY_CFG, TinyNet, tiny_checkpoint
from zoo.api import ModelZoo, builtin_registry, default_zoo
from zoo.archs.base import ZooModule
from zoo.domain.errors import CheckpointMismatchError
from zoo.domain.values import BuildRequest, ModelSpec
from zoo.services.registry import Registry
from zoo.services.weights import StateDictLoader, apply_weights

StateDict = dict[str, torch.Tensor]


def tiny_zoo(state_dict: Mapping[str, torch.Tensor]) -> ModelZoo:
    reg = Registry()
    reg.register(ModelSpec(name="tiny_net", family="tests.tiny", constructor=TinyNet, default_cfgs=(TINY_CFG,)))
    return ModelZoo(registry=reg, weight_loader=StateDictLoader(state_dict))


def build(ckpt: Mapping[str, torch.Tensor], *, num_classes: int | None = None) -> ZooModule:
    return tiny_zoo(ckpt).create_model("tiny_net", pretrained=True, num_classes=num_classes)


def trained(num_classes: int, seed: int = 0) -> StateDict:
    """A TinyNet checkpoint fine-tuned to num_classes: every value non-trivial."""
    torch.manual_seed(seed)
    model = TinyNet(num_classes=num_classes)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_loaded(model: nn.Module, ckpt: Mapping[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    state = model.state_dict()
    for k, v in ckpt.items():
        if not k.startswith(skip):
            assert torch.equal(state[k], v.to(state[k].dtype)), k


@contextlib.contextmanager
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def fresh_linear(model: nn.Module, shape: tuple[int, int]) -> None:
    """The classifier is a real, freshly initialised Linear of shape (not a checkpoint's values, not meta)."""
    fc = model.get_submodule("fc")
    assert isinstance(fc, nn.Linear)
    assert fc.weight.shape == shape
    assert not fc.weight.is_meta
    assert torch.isfinite(fc.weight).all()
    assert fc.weight.abs().max() <= 0.5  # nn.Linear's init bound 1/sqrt(4); trained values are >= 0.5


# -- the checkpoint's classifier, not the cfg's class count, decides ----------------------------


def test_head_that_fits_the_requested_classes_is_loaded() -> None:
    ckpt = trained(10)
    with no_warnings():
        model = build(ckpt, num_classes=10)
    assert_loaded(model, ckpt)
    assert model.default_cfg.num_classes == 10


def test_without_num_classes_the_checkpoints_head_decides() -> None:
    ckpt = trained(10)
    with no_warnings():
        model = build(ckpt)
    assert model.num_classes == 10
    assert model.default_cfg.num_classes == 10
    assert_loaded(model, ckpt)


@pytest.mark.parametrize("num_classes", [3, 0])
def test_head_that_does_not_fit_is_dropped_with_a_warning(num_classes: int) -> None:
    ckpt = trained(10)
    with pytest.warns(UserWarning, match=r"fc\.weight \(10, 4\)") as record:
        model = build(ckpt, num_classes=num_classes)
    message = " ".join(str(w.message) for w in record)
    assert record[0].filename == __file__  # the warning points at the caller, not inside zoo
    assert f"num_classes={num_classes}" in message
    if num_classes:
        assert "(3, 4)" in message
        fresh_linear(model, (3, 4))
    else:
        assert not [k for k in model.state_dict() if k.startswith("fc.")]
    assert_loaded(model, ckpt, skip=("fc.",))
    assert model.default_cfg.num_classes == num_classes


@pytest.mark.parametrize("num_classes", [7, None])
def test_headless_checkpoint_gets_a_fresh_head_with_a_warning(num_classes: int | None) -> None:
    ckpt = {k: v for k, v in trained(5).items() if not k.startswith("fc.")}
    with pytest.warns(UserWarning, match="has no classifier 'fc'"):
        model = build(ckpt, num_classes=num_classes)
    classes = TINY_CFG.num_classes if num_classes is None else num_classes
    fresh_linear(model, (classes, 4))
    assert_loaded(model, ckpt)


def test_fine_tuned_resnet18_file_keeps_its_classifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    tuned = default_zoo().create_model("resnet18", num_classes=10).eval()
    path = tmp_path / "ft.safetensors"
    save_file(tuned.state_dict(), str(path))
    with no_warnings():
        asked = default_zoo().create_model("resnet18", num_classes=10, checkpoint_path=str(path)).eval()
        inferred = default_zoo().create_model("resnet18", checkpoint_path=str(path)).eval()
    assert inferred.default_cfg.num_classes == 10
    assert_loaded(asked, tuned.state_dict())
    assert_loaded(inferred, tuned.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(inferred(x), tuned(x))


# -- older layouts and other dtypes ------------------------------------------------------------


def test_checkpoint_without_num_batches_tracked_loads() -> None:
    full = tiny_checkpoint()
    assert "bn1.num_batches_tracked" in full
    ckpt = {k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}
    model = build(ckpt)
    assert_loaded(model, ckpt)
    tracked = model.get_buffer("bn1.num_batches_tracked")
    assert tracked.dtype == torch.long
    assert tracked.item() == 0


def test_tensors_are_cast_to_the_models_dtypes() -> None:
    ckpt = tiny_checkpoint()
    ckpt["conv1.weight"] = torch.randint(-3, 4, ckpt["conv1.weight"].shape)
    ckpt["bn1.num_batches_tracked"] = torch.tensor(7.0)
    model = build(ckpt)
    weight = model.get_parameter("conv1.weight")
    assert weight.dtype == torch.float32
    assert weight.requires_grad
    assert torch.equal(weight, ckpt["conv1.weight"].float())
    tracked = model.get_buffer("bn1.num_batches_tracked")
    assert tracked.dtype == torch.long
    assert tracked.item() == 7


@pytest.mark.parametrize(
    ("key", "value", "dtype"),
    [
        ("bn1.num_batches_tracked", torch.tensor(2.5), "torch.float32"),
        ("conv1.bias", torch.ones(4, dtype=torch.bool), "torch.bool"),
        ("conv1.bias", torch.ones(4, dtype=torch.complex64), "torch.complex64"),
        ("bn1.num_batches_tracked", torch.tensor(True), "torch.bool"),
        ("bn1.num_batches_tracked", torch.tensor(float("inf")), "torch.float32"),
    ],
    ids=["fractional-to-int", "bool-to-float", "complex-to-float", "bool-to-int", "inf-to-int"],
)
def test_casts_that_lose_meaning_are_refused(key: str, value: torch.Tensor, dtype: str) -> None:
    ckpt = tiny_checkpoint()
    ckpt[key] = value
    torch.manual_seed(1)
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = ModelSpec(name="tiny_net", family="tests", constructor=TinyNet, default_cfgs=(TINY_CFG,))
    with pytest.raises(CheckpointMismatchError, match=rf"{key}.*{dtype}"):
        apply_weights(model, ckpt, spec, TINY_CFG, BuildRequest(cfg=TINY_CFG), False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    with pytest.raises(CheckpointMismatchError, match=rf"{key}.*{dtype}"):
        build(ckpt)


# -- meta-device builds under threads ----------------------------------------------------------


def run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(target: Callable[[], None]) -> None:
        try:
            barrier.wait()
            target()
        except BaseException as e:  # every failure is reported, not only the first
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_meta_builds_in_threads_are_safe_for_every_thread() -> None:
    torch.manual_seed(0)
    ckpt = {k: v.clone() for k, v in default_zoo().create_model("resnet18").state_dict().items()}
    app = ModelZoo(registry=builtin_registry(), weight_loader=StateDictLoader(ckpt))
    built: list[nn.Module] = []
    plain: list[nn.Module] = []
    done = threading.Event()

    def build_resnets() -> None:
        for _ in range(3):
            built.append(app.create_model("resnet18", pretrained=True))

    def build_plain() -> None:
        # any module construction registers parameters and so runs the process-wide hooks
        while not done.is_set():
            plain.append(nn.Sequential(*[nn.Linear(2, 2) for _ in range(50)]))

    def builders() -> None:
        try:
            assert not run_threads([build_resnets] * 8)
        finally:
            done.set()

    errors = run_threads([builders, build_plain, build_plain])
    assert errors == []
    assert len(built) == 24
    for model in built:
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in ckpt.items())
    assert plain
    assert not any(p.is_meta for m in plain[-5:] for p in m.parameters())
