"""The FeatureWrapperFactory and its extractors: requests, contract, laziness, hooks, typing, CLI."""

from __future__ import annotations

import copy
import gc
import pickle
import threading

import numpy as np
import pytest
import torch
from torch import nn

import zoo
from modelcache import served
from refdata import reference
from zoo.api import ModelZoo
from zoo.archs.base import ZooModule
from zoo.archs.resnet import ResNet
from zoo.cli import main
from zoo.domain import (
    FEATURE_CLASSES,
    BuildRequest,
    DefaultCfg,
    FeatureCfg,
    FeatureInfo,
    InvalidFeatureRequestError,
    InvalidValueError,
    ModelSpec,
)
from zoo.services.features import (
    FeatureDictNet,
    FeatureExtractor,
    FeatureFactory,
    FeatureGetterNet,
    FeatureHookNet,
    FeatureListNet,
)
from zoo.services.weights import StateDictLoader

FACTORY = FeatureFactory()
CFG = FeatureCfg()
TAPS = ["act1", "layer1", "layer2", "layer3", "layer4"]


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def as_list(out: list[torch.Tensor] | dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return list(out.values()) if isinstance(out, dict) else out


# -- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("out_indices", "expected"),
    [
        (None, (0, 1, 2, 3, 4)),
        ((1,), (1,)),
        ((-1,), (4,)),
        ((4, 0, 2), (0, 2, 4)),
        ([-5, -1], (0, 4)),
        ((np.int64(3),), (3,)),
    ],
)
def test_out_indices_are_normalised(
    r18: ResNet, out_indices: tuple[int, ...] | None, expected: tuple[int, ...]
) -> None:
    extractor = FACTORY.wrap(r18, CFG, out_indices=out_indices)
    assert extractor.out_indices == expected
    assert extractor.feature_info.out_indices == expected
    assert extractor.feature_info.module_name() == [TAPS[i] for i in expected]


def test_the_spec_cfg_gives_the_default_out_indices(r18: ResNet) -> None:
    assert FACTORY.wrap(r18, FeatureCfg(out_indices=(2, 3))).out_indices == (2, 3)
    assert FACTORY.wrap(r18, FeatureCfg(out_indices=(2, 3)), out_indices=(-1,)).out_indices == (4,)


@pytest.mark.parametrize(
    ("out_indices", "reason"),
    [
        ((), "selects no tap"),
        ((5,), "5 is out of range"),
        ((-6,), "-6 is out of range"),
        ((1, -4), r"tap\(s\) \[1\] selected more than once"),
        ((2, 2), r"tap\(s\) \[2\] selected more than once"),
        ((1.0,), "1.0 is not an int"),
        (("1",), "'1' is not an int"),
        ((True,), "True is not an int"),
        ((None,), "None is not an int"),
        (3, "expected a sequence of ints"),
        ("12", "expected a sequence of ints"),
    ],
)
def test_invalid_out_indices_name_the_range_and_taps(r18: ResNet, out_indices: object, reason: str) -> None:
    with pytest.raises(InvalidFeatureRequestError, match=reason) as err:
        FACTORY.wrap(r18, CFG, out_indices=out_indices)  # type: ignore[arg-type]  # deliberately wrong
    message = str(err.value)
    assert "valid indices are 0..4 (or -5..-1" in message
    assert "0=act1, 1=layer1, 2=layer2, 3=layer3, 4=layer4" in message


def test_invalid_requests_through_create_model() -> None:
    with pytest.raises(InvalidFeatureRequestError, match=r"out of range.*0=act1"):
        zoo.create_model("resnet18", features_only=True, out_indices=(7,))
    with pytest.raises(InvalidFeatureRequestError, match=r"'tuple'.*'list', 'dict', 'hook', 'getter'"):
        zoo.create_model("resnet18", features_only=True, feature_cls="tuple")
    with pytest.raises(InvalidValueError, match="features_only"):
        zoo.create_model("resnet18", feature_cls="list")


@pytest.mark.parametrize("feature_cls", ["", "List", "tuple", "hooks"])
def test_unknown_feature_cls(r18: ResNet, feature_cls: str) -> None:
    with pytest.raises(InvalidFeatureRequestError, match="expected one of 'list', 'dict', 'hook', 'getter'"):
        FACTORY.wrap(r18, CFG, feature_cls=feature_cls)


def test_feature_cls_picks_the_strategy(r18: ResNet) -> None:
    kinds = {"list": FeatureListNet, "dict": FeatureDictNet, "hook": FeatureHookNet, "getter": FeatureGetterNet}
    assert set(kinds) == set(FEATURE_CLASSES)
    for name, cls in kinds.items():
        assert type(FACTORY.wrap(r18, CFG, feature_cls=name)) is cls
        assert type(FACTORY.wrap(r18, FeatureCfg(feature_cls=name))) is cls


# -- outputs ----------------------------------------------------------------------------------


def test_output_formats(r18: ResNet, x: torch.Tensor) -> None:
    with torch.no_grad():
        as_dict = FACTORY.wrap(r18, CFG, out_indices=(1, 3), feature_cls="dict")(x)
        listed = FACTORY.wrap(r18, CFG, out_indices=(1, 3), feature_cls="list")(x)
        full = r18.forward_features(x)
    assert isinstance(as_dict, dict)
    assert list(as_dict) == ["1", "3"]  # the tap indices, as the reference keys them
    assert isinstance(listed, list)
    assert [t.shape for t in listed] == [(2, 64, 16, 16), (2, 256, 4, 4)]
    assert all(torch.equal(a, b) for a, b in zip(listed, as_dict.values(), strict=True))
    with torch.no_grad():
        last = as_list(FACTORY.wrap(r18, CFG, out_indices=(-1,), feature_cls="hook")(x))
    assert torch.equal(last[0], full)


def test_forward_intermediates(r18: ResNet, x: torch.Tensor) -> None:
    with torch.no_grad():
        final, every = r18.forward_intermediates(x)
        some = r18.forward_intermediates(x, indices=(-1, 1), intermediates_only=True)
        last_two = r18.forward_intermediates(x, 2, intermediates_only=True)
        early, upto2 = r18.forward_intermediates(x, indices=[0, 2], stop_early=True)
        nhwc = r18.forward_intermediates(x, indices=1, output_fmt="NHWC", intermediates_only=True)
        normed, _ = r18.forward_intermediates(x, indices=1, norm=True)  # ResNet has no final norm
        full = r18.forward_features(x)
    assert [t.shape[1] for t in every] == [64, 64, 128, 256, 512]
    assert torch.equal(final, full)
    assert torch.equal(normed, full)
    assert torch.equal(every[-1], full)
    assert len(some) == 2
    assert torch.equal(some[0], every[1])
    assert torch.equal(some[1], every[4])
    assert len(last_two) == 2
    assert torch.equal(last_two[0], every[3])
    assert torch.equal(last_two[1], every[4])
    assert [t.shape for t in upto2] == [every[0].shape, every[2].shape]
    assert torch.equal(early, every[2])  # stop_early: the final features are the last tap run
    assert len(nhwc) == 1
    assert torch.equal(nhwc[0], every[4].permute(0, 2, 3, 1))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"indices": (5,)}, InvalidFeatureRequestError, r"indices=\(5,\) is invalid: 5 is out of range.*0=act1"),
        ({"indices": 0}, InvalidFeatureRequestError, r"indices=0 is invalid: an int counts the last taps.*1 to 5"),
        ({"indices": 6}, InvalidFeatureRequestError, r"indices=6 is invalid.*1 to 5.*4=layer4"),
        ({"indices": "1"}, InvalidFeatureRequestError, "expected an int or a sequence of ints"),
        ({"output_fmt": "NLC"}, InvalidValueError, r"output_fmt='NLC' is invalid: expected one of 'NCHW', 'NHWC'"),
        ({"stop_early": 1}, InvalidValueError, "stop_early=1 is invalid: expected True or False"),
        ({"norm": "yes"}, InvalidValueError, "norm='yes' is invalid"),
        ({"intermediates_only": None}, InvalidValueError, "intermediates_only=None is invalid"),
    ],
)
def test_forward_intermediates_refuses_bad_arguments(
    r18: ResNet, x: torch.Tensor, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        r18.forward_intermediates(x, **kwargs)  # type: ignore[call-overload]  # deliberately wrong


@pytest.mark.parametrize("feature_cls", FEATURE_CLASSES)
def test_later_stages_do_not_run(r18: ResNet, x: torch.Tensor, feature_cls: str) -> None:
    calls: dict[str, int] = dict.fromkeys(TAPS, 0)

    def count(name: str) -> None:
        calls[name] += 1

    handles = [r18.get_submodule(name).register_forward_hook(lambda *_, name=name: count(name)) for name in TAPS]
    try:
        extractor = FACTORY.wrap(r18, CFG, out_indices=(1,), feature_cls=feature_cls)
        with torch.no_grad():
            out = as_list(extractor(x))
    finally:
        for h in handles:
            h.remove()
    assert len(out) == 1
    assert calls == {"act1": 1, "layer1": 1, "layer2": 0, "layer3": 0, "layer4": 0}


def test_list_and_dict_hold_only_the_modules_they_run(r18: ResNet) -> None:
    extractor = FACTORY.wrap(r18, CFG, out_indices=(0, 2))
    assert [name for name, _ in extractor.named_children()] == ["conv1", "bn1", "act1", "maxpool", "layer1", "layer2"]
    # parameter names are the classifier's (its checkpoints fit), and the tensors are the classifier's own
    classifier = r18.state_dict()
    mine = extractor.state_dict()
    assert mine
    assert set(mine) <= set(classifier)
    assert not any(k.startswith(("layer3.", "layer4.", "fc.")) for k in mine)
    assert all(mine[k].data_ptr() == classifier[k].data_ptr() for k in mine)


@pytest.mark.parametrize("feature_cls", FEATURE_CLASSES)
def test_extractors_share_weights_and_leave_the_classifier_alone(
    r18: ResNet, x: torch.Tensor, feature_cls: str
) -> None:
    model = copy.deepcopy(r18)
    extractor = FACTORY.wrap(model, CFG, feature_cls=feature_cls)
    assert not any(k.startswith(("fc.", "model.fc.")) for k in extractor.state_dict())
    assert isinstance(model.fc, nn.Linear)
    with torch.no_grad():
        assert model(x).shape == (2, 1000)
        before = as_list(extractor(x))[-1].clone()
        for p in model.layer4.parameters():  # a change to the classifier's weights is the extractor's too
            p.mul_(1.5)
        after = as_list(extractor(x))[-1]
    assert not torch.equal(before, after)


# -- hooks ------------------------------------------------------------------------------------


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_fire_only_inside_their_extractor(r18: ResNet, x: torch.Tensor) -> None:
    first = FACTORY.wrap(r18, CFG, out_indices=(1,), feature_cls="hook")
    second = FACTORY.wrap(r18, CFG, out_indices=(3,), feature_cls="hook")
    with torch.no_grad():
        r18(x)  # runs every hooked module outside both extractors
        a, b = as_list(first(x)), as_list(second(x))
        expected = r18.forward_intermediates(x, indices=(1, 3), intermediates_only=True)
    assert torch.equal(a[0], expected[0])
    assert torch.equal(b[0], expected[1])


def test_hooks_are_removed_with_their_extractor(r18: ResNet) -> None:
    before = hook_count(r18)
    extractor = FACTORY.wrap(r18, CFG, feature_cls="hook")
    assert hook_count(r18) == before + len(TAPS)
    del extractor
    gc.collect()
    assert hook_count(r18) == before


def test_hook_extractor_copies_and_pickles(r18: ResNet, x: torch.Tensor) -> None:
    extractor = FACTORY.wrap(r18, CFG, out_indices=(0, 4), feature_cls="hook")
    with torch.no_grad():
        expected = as_list(extractor(x))
        for clone in (copy.deepcopy(extractor), pickle.loads(pickle.dumps(extractor))):
            got = as_list(clone(x))
            assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_hook_extractor_serves_threads(r18: ResNet) -> None:
    extractor = FACTORY.wrap(r18, CFG, out_indices=(2, 3), feature_cls="hook")
    inputs = [torch.randn(1, 3, 32 + 8 * i, 32 + 8 * i) for i in range(4)]
    results: dict[int, list[torch.Tensor]] = {}

    def work(i: int) -> None:
        with torch.no_grad():
            for _ in range(3):
                results[i] = as_list(extractor(inputs[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with torch.no_grad():
        for i, inp in enumerate(inputs):
            expected = r18.forward_intermediates(inp, indices=(2, 3), intermediates_only=True)
            assert all(torch.equal(a, b) for a, b in zip(results[i], expected, strict=True))


# -- models beyond ResNet ---------------------------------------------------------------------


class Staged(nn.Module):
    """Taps at dotted paths inside nn.Sequential containers, and no forward_intermediates."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.stages = nn.Sequential(
            nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU()),
        )
        self.head = nn.Linear(8, 3)
        self.feature_info = [
            FeatureInfo(index=0, module="stem.1", num_chs=4, reduction=2),
            FeatureInfo(index=1, module="stages.0", num_chs=6, reduction=4),
            FeatureInfo(index=2, module="stages.1", num_chs=8, reduction=8),
        ]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.stages(self.stem(x))
        return out


def test_flatten_sequential_reaches_dotted_taps() -> None:
    model = Staged().eval()
    x = torch.randn(1, 3, 32, 32)
    flat = FeatureCfg(flatten_sequential=True)
    listed = FACTORY.wrap(model, flat, out_indices=(0, 1))
    assert [n for n, _ in listed.named_children()] == ["stem_0", "stem_1", "stages_0"]
    with torch.no_grad():
        got = as_list(listed(x))
        hooked = as_list(FACTORY.wrap(model, CFG, feature_cls="hook", out_indices=(0, 1))(x))
        as_dict = FACTORY.wrap(model, flat, feature_cls="dict")(x)
    assert [t.shape[1] for t in got] == [4, 6]
    assert all(torch.equal(a, b) for a, b in zip(got, hooked, strict=True))
    assert list(as_dict) == ["0", "1", "2"]
    # without flatten_sequential, a top-level nn.Sequential holding a tap keeps its name, its children run one by one
    nested = FACTORY.wrap(model, CFG, out_indices=(0, 1))
    assert [n for n, _ in nested.named_children()] == ["stem", "stages"]
    assert sorted(nested.state_dict()) == ["stages.0.0.bias", "stages.0.0.weight", "stem.0.bias", "stem.0.weight"]
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(as_list(nested(x)), got, strict=True))


def test_models_that_cannot_serve_a_request() -> None:
    with pytest.raises(InvalidFeatureRequestError, match="forward_intermediates"):
        FACTORY.wrap(Staged(), CFG, feature_cls="getter")
    with pytest.raises(InvalidFeatureRequestError, match="no feature_info"):
        FACTORY.wrap(nn.Linear(2, 2), CFG)
    broken = Staged()
    broken.feature_info = [FeatureInfo(index=0, module="stem.9", num_chs=4, reduction=2)]
    with pytest.raises(InvalidFeatureRequestError, match=r"no module 'stem\.9'"):
        FACTORY.wrap(broken, CFG, feature_cls="hook")


# -- contract against the reference, through create_model -------------------------------------


# every name's extractor taps are checked on meta in tests/every_name (through the factory, the default kind
# through create_model); here, for the run's drawn names (tests/tiers.py), every kind through create_model
@pytest.mark.drawn_names
def test_feature_info_matches_reference(name: str) -> None:
    expected = [(t["index"], t["module"], t["num_chs"], t["reduction"]) for t in reference(name)["feature_info"]]
    for feature_cls in FEATURE_CLASSES:
        with torch.device("meta"):  # the contract is metadata: no memory, no init time
            if feature_cls not in served(zoo.api.default_zoo().get_spec(name).constructor):
                # a token model's blocks give tokens, not maps: refused, pointing at the getter
                with pytest.raises(InvalidFeatureRequestError, match="getter"):
                    zoo.create_model(name, features_only=True, feature_cls=feature_cls)
                continue
            extractor = zoo.create_model(name, features_only=True, feature_cls=feature_cls)
        info = extractor.feature_info
        assert [(t.index, t.module, t.num_chs, t.reduction) for t in info] == expected
        assert extractor.out_indices == tuple(range(len(expected)))
        assert info.channels() == [t[2] for t in expected]
        assert info.reduction() == [t[3] for t in expected]
        assert info.module_name() == [t[1] for t in expected]
        assert len(info) == len(expected)
        assert info[-1].module == expected[-1][1]
        assert extractor.default_cfg.num_classes == 0
        assert extractor.default_cfg.classifier == ""
        assert extractor.pretrained_cfg == extractor.default_cfg
        assert extractor.default_cfg.input_size == zoo.get_default_cfg(name).input_size


def test_create_model_types() -> None:
    # what a type checker sees (mypy runs over the tests): features_only=True gives a FeatureExtractor
    extractor: FeatureExtractor = zoo.create_model("resnet18", features_only=True, out_indices=(-2, -1))
    classifier: ZooModule = zoo.create_model("resnet18")
    assert isinstance(extractor, FeatureExtractor)
    assert isinstance(classifier, ResNet)
    assert extractor.feature_info.channels() == [256, 512]


def test_pretrained_weights_load_into_the_classifier_before_wrapping(x: torch.Tensor) -> None:
    torch.manual_seed(1)
    source = zoo.create_model("resnet18").eval()
    assert isinstance(source, ResNet)
    seen: list[type[nn.Module]] = []

    def apply(
        model: nn.Module,
        state_dict: dict[str, torch.Tensor],
        spec: ModelSpec,
        cfg: DefaultCfg,
        request: BuildRequest,
        on_meta: bool,
    ) -> nn.Module:
        seen.append(type(model))
        model.load_state_dict(state_dict, assign=on_meta)
        return model

    app = ModelZoo(weight_loader=StateDictLoader(source.state_dict()), weight_applier=apply, feature_factory=FACTORY)
    extractor = app.create_model("resnet18", pretrained=True, features_only=True, out_indices=(2, 4)).eval()
    assert seen == [ResNet]
    with torch.no_grad():
        got = as_list(extractor(x))
        expected = source.forward_intermediates(x, indices=(2, 4), intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


# -- CLI --------------------------------------------------------------------------------------


def test_cli_features_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["features", "resnet18", "--out-indices", "1", "-1", "--input-size", "3", "64", "96"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "4 "))]
    assert rows == [
        ["1", "layer1", "64", "4", "(1,", "64,", "16,", "24)"],
        ["4", "layer4", "512", "32", "(1,", "512,", "2,", "3)"],
    ]
    assert "forward" in out
    assert " ms" in out


def test_cli_features_refuses_bad_requests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "resnet18", "--out-indices", "9"]) == 2
    err = capsys.readouterr().err
    assert "out of range" in err
    assert "0=act1" in err
