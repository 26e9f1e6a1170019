"""Registry: registration, filters, natural sort, tags, lazy families, threads, copies."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pytest
from torch import nn

from zoo.archs.base import ZooModule
from zoo.domain import DefaultCfg, DuplicateModelError, ModelSpec, UnknownModelError
from zoo.services.registry import Registry, natural_key


class Tiny(ZooModule):
    """A one-layer model for registry tests."""

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, width: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(in_chans * width, num_classes)


def spec(name: str, family: str = "tests.fam", tags: Iterable[str] = ("",), weights: bool = False) -> ModelSpec:
    cfgs = tuple(DefaultCfg(tag=t, url=f"https://example.invalid/{name}-{t}.pth" if weights else "") for t in tags)
    return ModelSpec(name=name, family=family, constructor=Tiny, default_cfgs=cfgs)


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    for n in ("resnet101", "resnet18", "resnet50", "resnet50d", "vit_small", "efficientnet_b0"):
        r.register(spec(n, family=f"tests.{n.split('_')[0].rstrip('0123456789d')}"))
    r.register(spec("resnet34", family="tests.resnet", tags=("a1_in1k", "tv_in1k"), weights=True), replace=True)
    return r


def test_natural_sort() -> None:
    assert sorted(["resnet101", "resnet18", "resnet50"], key=natural_key) == ["resnet18", "resnet50", "resnet101"]


def test_list_models_filters(reg: Registry) -> None:
    assert reg.list_models("resnet*") == ["resnet18", "resnet34", "resnet50", "resnet50d", "resnet101"]
    assert reg.list_models(["vit*", "eff*"]) == ["efficientnet_b0", "vit_small"]
    assert reg.list_models("resnet*", exclude_filters="*d") == ["resnet18", "resnet34", "resnet50", "resnet101"]
    assert reg.list_models("resnet*", exclude_filters=["*d", "*1*"]) == ["resnet34", "resnet50"]
    assert reg.list_models(module="vit") == ["vit_small"]
    assert reg.list_models("nothing*") == []


def test_tags_and_pretrained(reg: Registry) -> None:
    # include_tags defaults to "with tags when pretrained=True", as timm's listing does
    assert reg.list_models(pretrained=True) == ["resnet34.a1_in1k", "resnet34.tv_in1k"]
    assert reg.list_models(pretrained=True, include_tags=False) == ["resnet34"]
    assert reg.list_models("resnet3*", include_tags=True) == ["resnet34.a1_in1k", "resnet34.tv_in1k"]
    assert reg.list_pretrained() == ["resnet34.a1_in1k", "resnet34.tv_in1k"]
    assert reg.list_pretrained("*.tv_*") == ["resnet34.tv_in1k"]
    assert reg.is_model("resnet34.tv_in1k")
    assert not reg.is_model("resnet34.nope")
    assert reg.resolve("resnet34.tv_in1k")[1].tag == "tv_in1k"
    assert reg.resolve("resnet34")[1].tag == "a1_in1k"
    with pytest.raises(UnknownModelError, match=r"resnet34\.tv_in1k"):
        reg.resolve("resnet34.tv_in1")


def test_unknown_name_suggests_close_matches(reg: Registry) -> None:
    with pytest.raises(UnknownModelError) as err:
        reg.get_spec("resnet5")
    assert err.value.suggestions[0] == "resnet50"
    assert len(err.value.suggestions) <= 3
    assert "resnet50" in str(err.value)
    assert not reg.is_model("resnet5")


def test_duplicates(reg: Registry) -> None:
    with pytest.raises(DuplicateModelError, match="resnet18"):
        reg.register(spec("resnet18"))
    new = spec("resnet18", family="tests.mine")
    reg.register(new, replace=True)
    assert reg.get_spec("resnet18") is new


def test_register_model_decorator() -> None:
    reg = Registry()

    @reg.register_model("tiny_net", width=8)
    def tiny_net(*, num_classes: int = 10, in_chans: int = 3, width: int = 4) -> nn.Module:
        return Tiny(num_classes=num_classes, in_chans=in_chans, width=width)

    s = reg.get_spec("tiny_net")
    assert s.constructor is tiny_net
    assert dict(s.model_args) == {"width": 8}
    assert reg.list_models() == ["tiny_net"]
    assert reg.list_modules() == ["test_registry"]


def test_copy_is_independent(reg: Registry) -> None:
    other = reg.copy()
    other.register(spec("mine"))
    assert other.is_model("mine")
    assert not reg.is_model("mine")
    assert len(other) == len(reg) + 1


def test_lazy_family_loads_once_and_only_when_needed() -> None:
    calls: list[str] = []

    def loader() -> list[ModelSpec]:
        calls.append("load")
        return [spec("lazy_a", family="tests.lazy"), spec("lazy_b", family="tests.lazy", tags=("x",), weights=True)]

    reg = Registry()
    reg.register_lazy("tests.lazy", ["lazy_a", "lazy_b"], loader)
    assert reg.list_models() == ["lazy_a", "lazy_b"]
    assert reg.list_modules() == ["lazy"]
    assert reg.is_model("lazy_a")
    assert calls == []
    assert reg.get_spec("lazy_b").tags == ("x",)
    assert reg.list_pretrained() == ["lazy_b.x"]
    assert calls == ["load"]


def test_application_replacement_wins_over_lazy_family() -> None:
    reg = Registry()
    reg.register_lazy("tests.lazy", ["lazy_a"], lambda: [spec("lazy_a", family="tests.lazy")])
    with pytest.raises(DuplicateModelError):
        reg.register(spec("lazy_a", family="app"))
    mine = spec("lazy_a", family="app")
    reg.register(mine, replace=True)
    assert reg.get_spec("lazy_a") is mine
    reg.list_models(pretrained=True)  # loads every family
    assert reg.get_spec("lazy_a") is mine


def test_concurrent_registration_and_lookup() -> None:
    reg = Registry()
    loads: list[int] = []

    def loader() -> list[ModelSpec]:
        loads.append(1)
        return [spec("shared_lazy", family="tests.lazy")]

    reg.register_lazy("tests.lazy", ["shared_lazy"], loader)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for j in range(50):
                reg.register(spec(f"m{i}_{j}"))
                assert reg.get_spec("shared_lazy").name == "shared_lazy"
                reg.list_models("m*")
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(reg.list_models("m*")) == 400
    assert loads == [1]

    dupes: list[BaseException] = []

    def racer() -> None:
        try:
            reg.register(spec("contested"))
        except DuplicateModelError as e:
            dupes.append(e)

    racers = [threading.Thread(target=racer) for _ in range(8)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert len(dupes) == 7
