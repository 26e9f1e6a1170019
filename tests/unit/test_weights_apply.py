"""Applying checkpoints: adaptation numerics, the meta fast path, mismatch reports, injection, end to end."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch
from torch import nn

from weights_support import (
    TINY_CFG,
    CheckpointServer,
    TinyNet,
    cache_files,
    safetensors_bytes,
    tiny_checkpoint,
    torch_bytes,
)
from zoo.api import ModelZoo, builtin_registry, default_zoo
from zoo.archs.base import ZooModule
from zoo.domain.errors import CheckpointMismatchError
from zoo.domain.protocols import WeightLoader
from zoo.domain.values import BuildRequest, DefaultCfg, ModelSpec
from zoo.services.registry import Registry
from zoo.services.weights import CachedWeightLoader, StateDictLoader, apply_weights, parameters_on_meta
from zoo.services.weights.adapt import adapt_input_conv
from zoo.services.weights.meta import meta_tensors

StateDict = dict[str, torch.Tensor]


def tiny_zoo(
    state_dict: Mapping[str, torch.Tensor],
    *,
    constructor: Callable[..., nn.Module] = TinyNet,
    pretrained_filter: Callable[[StateDict, nn.Module], StateDict] | None = None,
    weight_loader: WeightLoader | None = None,
) -> ModelZoo:
    reg = Registry()
    reg.register(
        ModelSpec(
            name="tiny_net",
            family="tests.tiny",
            constructor=constructor,
            default_cfgs=(TINY_CFG,),
            pretrained_filter=pretrained_filter,
        )
    )
    return ModelZoo(registry=reg, weight_loader=weight_loader or StateDictLoader(state_dict))


def build(
    ckpt: Mapping[str, torch.Tensor], *, num_classes: int | None = None, in_chans: int | None = None
) -> ZooModule:
    return tiny_zoo(ckpt).create_model("tiny_net", pretrained=True, num_classes=num_classes, in_chans=in_chans)


def assert_loaded(model: nn.Module, ckpt: Mapping[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    state = model.state_dict()
    for k, v in ckpt.items():
        if not k.startswith(skip):
            assert torch.equal(state[k], v), k


# -- adaptation --------------------------------------------------------------------------------


@pytest.mark.parametrize("in_chans", [1, 2, 4, 7])
def test_in_chans_adaptation_numerics(in_chans: int) -> None:
    ckpt = tiny_checkpoint()
    model = build(ckpt, in_chans=in_chans)
    w = ckpt["conv1.weight"]
    if in_chans == 1:
        expected = w.sum(dim=1, keepdim=True)
    else:  # channel i sees RGB filter i mod 3, scaled so N channels together weigh what 3 did
        expected = torch.stack([w[:, i % 3] for i in range(in_chans)], dim=1) * (3 / in_chans)
    got = model.get_parameter("conv1.weight")
    assert got.shape == (4, in_chans, 3, 3)
    torch.testing.assert_close(got, expected)
    assert_loaded(model, ckpt, skip=("conv1.weight",))
    assert model.default_cfg.input_size == (in_chans, 8, 8)


def test_one_channel_model_sees_grey_as_the_rgb_model_does() -> None:
    ckpt = tiny_checkpoint()
    rgb, grey = build(ckpt).eval(), build(ckpt, in_chans=1).eval()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)))


def test_in_chans_that_cannot_be_adapted_is_refused() -> None:
    w = torch.randn(4, 1, 3, 3)
    with pytest.raises(CheckpointMismatchError, match=r"1 input channels to in_chans=3.*3-channel"):
        adapt_input_conv(w, 3, name="stem.weight")


def test_num_classes_other_than_checkpoint_gets_a_fresh_classifier() -> None:
    ckpt = tiny_checkpoint()
    with pytest.warns(UserWarning, match=r"num_classes=10: .*fc\.weight \(5, 4\).*'fc' freshly initialised"):
        model = build(ckpt, num_classes=10)
    fc = model.get_submodule("fc")
    assert isinstance(fc, nn.Linear)
    assert fc.weight.shape == (10, 4)
    assert not fc.weight.is_meta
    assert torch.isfinite(fc.weight).all()
    # nn.Linear's own init draws from U(-1/sqrt(in), 1/sqrt(in)); the checkpoint's values are all >= 0.5
    assert fc.weight.abs().max() <= 0.5
    assert fc.weight.std() > 0
    assert_loaded(model, ckpt, skip=("fc.",))


def test_num_classes_zero_means_no_classifier() -> None:
    ckpt = tiny_checkpoint()
    with pytest.warns(UserWarning, match=r"num_classes=0: the model has no classifier; dropped the checkpoint's fc"):
        model = build(ckpt, num_classes=0).eval()
    assert not [k for k in model.state_dict() if k.startswith("fc.")]
    full = build(ckpt).eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model(x), full.forward_head(full.forward_features(x), pre_logits=True))


# -- the meta fast path ------------------------------------------------------------------------


class PassThroughLoader(StateDictLoader):
    """Returns the very tensors it holds, as a file-mapping loader returns mapped ones."""

    def __init__(self, state_dict: StateDict) -> None:
        super().__init__({})
        self.state_dict = state_dict

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> StateDict:
        return self.state_dict


def test_pretrained_build_skips_init_and_shares_checkpoint_memory() -> None:
    seen: list[tuple[bool, bool]] = []

    def recording(**kwargs: int) -> TinyNet:
        m = TinyNet(**kwargs)
        seen.append((m.conv1.weight.is_meta, m.get_buffer("scale").is_meta))
        return m

    ckpt = tiny_checkpoint()
    zoo = tiny_zoo(ckpt, constructor=recording)
    zoo.builder.weight_loader = PassThroughLoader(ckpt)
    model = zoo.create_model("tiny_net", pretrained=True)
    zoo.create_model("tiny_net")
    # params on meta (no init spent), buffers real; without weights everything is real
    assert seen == [(True, False), (False, False)]
    assert meta_tensors(model) == []
    # assigned from what the loader returned, not copied
    assert model.get_parameter("conv1.weight").data_ptr() == ckpt["conv1.weight"].data_ptr()
    # the non-persistent buffer (in no checkpoint) has its computed value
    assert torch.equal(model.get_buffer("scale").flatten(), torch.arange(1.0, 5.0))
    assert model.get_parameter("conv1.weight").requires_grad


def _mapped_from(path: Path) -> list[tuple[int, int]]:
    """The address ranges this process maps from the file at path (Linux: /proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start, end = (int(a, 16) for a in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads the process's memory map (Linux)")
@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_checkpoint_file_is_mapped_into_the_model_not_copied(tmp_path: Path, fmt: str) -> None:
    # what keeps a pretrained build's peak memory near the checkpoint's size (benchmarks/pretrained_load.py
    # measures it): every tensor the file holds stays in the file's pages, none is copied
    ckpt = tiny_checkpoint()
    path = (tmp_path / f"tiny.{'safetensors' if fmt == 'safetensors' else 'pth'}").resolve()
    path.write_bytes(safetensors_bytes(ckpt) if fmt == "safetensors" else torch_bytes(ckpt))
    written = path.read_bytes()
    app = tiny_zoo(ckpt, weight_loader=CachedWeightLoader(cache_dir=tmp_path / "cache", progress=False))
    model = app.create_model("tiny_net", checkpoint_path=str(path))
    assert meta_tensors(model) == []
    ranges = _mapped_from(path)
    assert ranges, f"{path} is not mapped"
    state = model.state_dict()
    assert state.keys() == ckpt.keys()
    copied = [
        k for k, t in state.items() if not any(a <= t.data_ptr() and t.data_ptr() + t.nbytes <= b for a, b in ranges)
    ]
    assert copied == []
    assert_loaded(model, ckpt)
    # the mapping is private: a model that trains writes pages of its own, never the file
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    del model, state
    assert path.read_bytes() == written


def test_meta_construction_does_not_leak_into_other_threads() -> None:
    made: list[nn.Linear] = []
    with parameters_on_meta():
        inside = nn.Linear(2, 2)
        t = threading.Thread(target=lambda: made.append(nn.Linear(2, 2)))
        t.start()
        t.join()
    assert inside.weight.is_meta
    assert not made[0].weight.is_meta
    assert not nn.Linear(2, 2).weight.is_meta


def test_tied_parameters_stay_tied_on_meta() -> None:
    shared = nn.Parameter(torch.ones(3))
    with parameters_on_meta():
        a, b = nn.Module(), nn.Module()
        a.register_parameter("w", shared)
        b.register_parameter("w", shared)
    assert a.get_parameter("w").is_meta
    assert a.get_parameter("w") is b.get_parameter("w")


def test_half_precision_checkpoint_keeps_the_model_dtype() -> None:
    ckpt = {k: v.half() if v.is_floating_point() else v for k, v in tiny_checkpoint().items()}
    model = build(ckpt)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    torch.testing.assert_close(model.get_parameter("fc.weight"), ckpt["fc.weight"].float())


def test_pretrained_filter_runs_before_loading() -> None:
    ckpt = {k.replace("conv1.", "stem."): v for k, v in tiny_checkpoint().items()}
    calls: list[bool] = []

    def rename(sd: StateDict, model: nn.Module) -> StateDict:
        calls.append(isinstance(model, TinyNet))
        return {k.replace("stem.", "conv1."): v for k, v in sd.items()}

    model = tiny_zoo(ckpt, pretrained_filter=rename).create_model("tiny_net", pretrained=True)
    assert calls == [True]
    torch.testing.assert_close(model.get_parameter("conv1.weight"), ckpt["stem.weight"])


# -- mismatches leave the model as it was ------------------------------------------------------


def test_mismatch_report_lists_ten_of_each_and_counts() -> None:
    ckpt = tiny_checkpoint()
    del ckpt["bn1.running_var"]
    ckpt["conv1.bias"] = torch.zeros(7)
    for i in range(12):
        ckpt[f"extra.{i:02d}"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as e:
        build(ckpt)
    msg = str(e.value)
    assert "1 missing: bn1.running_var" in msg
    assert "12 unexpected: extra.00" in msg
    assert "extra.09, ... (2 more)" in msg
    assert "extra.10" not in msg
    assert "1 with other shapes (checkpoint vs model): conv1.bias (7,) vs (4,)" in msg
    assert e.value.missing == ("bn1.running_var",)
    assert len(e.value.unexpected) == 12
    assert e.value.mismatched == ("conv1.bias (7,) vs (4,)",)


@pytest.mark.parametrize(
    ("bad", "request_"),
    [
        (lambda sd: {**sd, "conv1.weight": torch.zeros(4, 3, 5, 5)}, BuildRequest(cfg=TINY_CFG)),
        (lambda sd: {k: v for k, v in sd.items() if k != "conv1.bias"}, BuildRequest(cfg=TINY_CFG)),
        (lambda sd: {**sd, "conv1.weight": torch.zeros(4, 2, 3, 3)}, BuildRequest(cfg=TINY_CFG, in_chans=4)),
    ],
    ids=["shape", "missing", "unadaptable-in-chans"],
)
def test_failed_apply_leaves_the_model_as_it_was(bad: Callable[[StateDict], StateDict], request_: BuildRequest) -> None:
    torch.manual_seed(1)
    model = TinyNet(in_chans=request_.in_chans or 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = ModelSpec(name="tiny_net", family="tests", constructor=TinyNet, default_cfgs=(TINY_CFG,))
    with pytest.raises(CheckpointMismatchError):
        apply_weights(model, bad(tiny_checkpoint()), spec, TINY_CFG, request_, False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# -- injection ---------------------------------------------------------------------------------


class RecordingLoader(StateDictLoader):
    """A fake WeightLoader: records each call and returns a generated state_dict (and has no hub files)."""

    def __init__(self, make: Callable[[], StateDict]) -> None:
        super().__init__({})
        self.make = make
        self.calls: list[tuple[DefaultCfg, str | None]] = []

    def load_state_dict(self, cfg: DefaultCfg, *, checkpoint_path: str | None = None) -> StateDict:
        self.calls.append((cfg, checkpoint_path))
        return self.make()


def test_fake_loader_is_used_without_touching_files_or_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fake loader must not reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    plain = ModelZoo()
    generated = {
        k: torch.full_like(v, 0.25) if v.is_floating_point() else v
        for k, v in plain.create_model("resnet18").state_dict().items()
    }
    fake = RecordingLoader(lambda: dict(generated))
    app = ModelZoo(registry=builtin_registry(), weight_loader=fake)
    model = app.create_model("resnet18.a1_in1k", pretrained=True)
    assert fake.calls == [(app.get_default_cfg("resnet18.a1_in1k"), None)]
    assert all(torch.equal(v, generated[k]) for k, v in model.state_dict().items())
    app.create_model("resnet18", checkpoint_path="/not/read/by/the/fake.pth")
    assert fake.calls[-1][1] == "/not/read/by/the/fake.pth"
    assert not (tmp_path / "cache").exists()


# -- end to end through the default zoo --------------------------------------------------------


def resnet18_source(server: CheckpointServer) -> tuple[nn.Module, dict[str, object]]:
    torch.manual_seed(0)
    source = ModelZoo().create_model("resnet18").eval()
    with torch.no_grad():  # non-trivial BN statistics, so a missed buffer would show in the outputs
        for name, buf in source.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    url = server.add("/timm/resnet18.safetensors", safetensors_bytes(source.state_dict()))
    return source, {"url": url, "hf_hub_id": ""}


def test_resnet18_pretrained_from_a_server_matches_its_source(server: CheckpointServer, cache_dir: Path) -> None:
    source, overlay = resnet18_source(server)
    model = default_zoo().create_model("resnet18", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    assert len(cache_files(cache_dir)) == 1
    default_zoo().create_model("resnet18", pretrained=True, pretrained_cfg_overlay=overlay)
    assert server.count("/timm/resnet18.safetensors") == 1


def _features_wired() -> bool:
    return default_zoo().builder.feature_factory is not None


@pytest.mark.skipif(not _features_wired(), reason="the default zoo has no FeatureWrapperFactory yet")
def test_pretrained_features_only(server: CheckpointServer, cache_dir: Path) -> None:
    source, overlay = resnet18_source(server)
    feats = default_zoo().create_model("resnet18", pretrained=True, features_only=True, pretrained_cfg_overlay=overlay)
    feats.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = feats(x)
        stem = source.act1(source.bn1(source.conv1(x)))  # type: ignore[operator]
        final = source.forward_features(x)  # type: ignore[operator]
    assert isinstance(maps, list)
    assert len(maps) == 5
    torch.testing.assert_close(maps[0], stem, rtol=0, atol=0)
    torch.testing.assert_close(maps[-1], final, rtol=0, atol=0)


def test_models_from_one_in_memory_state_dict_do_not_share_storage() -> None:
    ckpt = tiny_checkpoint()
    held = {k: v.clone() for k, v in ckpt.items()}
    app = tiny_zoo(ckpt)
    first = app.create_model("tiny_net", pretrained=True)
    second = app.create_model("tiny_net", pretrained=True)
    with torch.no_grad():
        first.get_parameter("conv1.weight").add_(1.0)
    torch.testing.assert_close(second.get_parameter("conv1.weight"), held["conv1.weight"])
    torch.testing.assert_close(ckpt["conv1.weight"], held["conv1.weight"])
