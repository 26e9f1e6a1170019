"""The Pruner: applying prune specs (registered pruned models, users' specs), checking them, deriving them."""

from __future__ import annotations

import copy
import functools
import itertools
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from refdata import pruned_layout, reference
from weights_support import CheckpointServer, cache_files, safetensors_bytes
from zoo.archs.base import ZooModule
from zoo.domain.errors import InvalidValueError, PruneSpecError, ZooError
from zoo.domain.prune import PruneSpec, parse_prune_spec
from zoo.domain.values import FeatureCfg, ModelSpec
from zoo.services.features import FeatureFactory
from zoo.services.pruner import ChannelPruner, count_flops, measure, meta_clone
from zoo.services.weights.meta import parameters_on_meta

PRUNED = ("ecaresnet50d_pruned", "ecaresnet101d_pruned")
PRUNER = ChannelPruner()


@functools.cache
def built(name: str) -> ZooModule:
    """Each model is built once for the module; tests that change one take a deepcopy."""
    torch.manual_seed(0)
    return zoo.create_model(name).eval()


@functools.cache
def x64() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def shapes(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- the spec value ----------------------------------------------------------------------------


def test_prune_spec_is_an_immutable_validated_mapping() -> None:
    spec = PruneSpec({"conv.weight": [8, 3, 3, 3], "bn.weight": (8,)})
    assert spec["conv.weight"] == (8, 3, 3, 3)
    assert list(spec) == ["conv.weight", "bn.weight"]
    assert spec == parse_prune_spec("conv.weight:[8, 3, 3, 3]***bn.weight:[8]")
    with pytest.raises(AttributeError):
        spec.entries = ()  # type: ignore[misc]  # frozen: the assignment itself is what is tested
    for bad, pattern in [
        ({}, "empty"),
        ([("a.weight", (2,)), ("a.weight", (2,))], "twice"),
        ({"a.weight": (2,), "a.bias": (3,)}, r"layer 'a'.*a\.weight has 2.*a\.bias has 3"),
        ({"a.weight": (0,)}, ">= 1"),
        ({"a..weight": (1,)}, "dotted"),
        ({"a_M.weight": (1, 2, 3)}, r"\[original, kept\]"),
    ]:
        with pytest.raises(PruneSpecError, match=pattern):
            PruneSpec(bad)


def test_a_model_spec_with_a_malformed_layout_is_refused_at_registration() -> None:
    with pytest.raises(PruneSpecError, match=r"ModelSpec\.prune_spec.*malformed"):
        ModelSpec(name="x", family="t", constructor=nn.Identity, prune_spec="conv1.weight:[1, 2")


# -- registered pruned models ------------------------------------------------------------------


@pytest.mark.parametrize("name", PRUNED)
def test_pruned_models_have_the_published_layout_and_taps(name: str) -> None:
    facts = reference(name)
    model = built(name)
    assert shapes(model) == facts["state_dict"]
    assert model.num_features == facts["num_features"]
    assert [f.num_chs for f in model.feature_info] == [t["num_chs"] for t in facts["feature_info"]]
    spec = zoo.api.default_zoo().get_spec(name)
    assert spec.prune_spec is not None
    assert parse_prune_spec(spec.prune_spec) == parse_prune_spec(pruned_layout(name))


def test_pruned_model_loads_its_own_checkpoint_on_the_meta_path(tmp_path: Path) -> None:
    source = built("ecaresnet50d_pruned")
    path = tmp_path / "pruned.pth"
    torch.save(source.state_dict(), path)
    loaded = zoo.create_model("ecaresnet50d_pruned", checkpoint_path=str(path)).eval()
    assert not any(t.is_meta for t in loaded.state_dict().values())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x64()), source(x64()), rtol=0, atol=0)
    # a new class count: the classifier reads the pruned width and is initialised afresh
    with pytest.warns(UserWarning, match=r"fc.weight \(1000, 2022\).*does not fit"):
        ten = zoo.create_model("ecaresnet50d_pruned", checkpoint_path=str(path), num_classes=10)
    assert isinstance(ten.fc, nn.Linear)
    assert (ten.fc.in_features, ten.fc.out_features) == (2022, 10)
    assert not any(t.is_meta for t in ten.state_dict().values())
    torch.testing.assert_close(ten.get_parameter("layer4.2.bn3.weight"), source.get_parameter("layer4.2.bn3.weight"))


def test_pretrained_pruned_model_downloads_and_loads_like_any_model(server: CheckpointServer, cache_dir: Path) -> None:
    source = built("ecaresnet50d_pruned")
    url = server.add("/w/ecaresnet50d_pruned.safetensors", safetensors_bytes(source.state_dict()))
    overlay = {"url": url, "hf_hub_id": ""}
    model = zoo.create_model("ecaresnet50d_pruned", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        assert torch.equal(model(x64()), source(x64()))
    extractor = zoo.create_model(
        "ecaresnet50d_pruned", pretrained=True, pretrained_cfg_overlay=overlay, features_only=True, out_indices=(2,)
    ).eval()
    with torch.no_grad():
        (tap,) = extractor.forward_taps(x64())
    assert tap.shape[1] == 171
    assert len(cache_files(cache_dir)) == 1


def test_pruned_model_as_a_backbone_taps_at_the_pruned_widths() -> None:
    extractor = zoo.create_model("ecaresnet50d_pruned", features_only=True).eval()
    with torch.no_grad():
        outs = extractor.forward_taps(x64())
    assert [o.shape[1] for o in outs] == extractor.feature_info.channels() == [64, 19, 171, 818, 2022]


def test_the_stem_and_the_classifier_follow_in_chans_num_classes_and_pooling() -> None:
    model = zoo.create_model("ecaresnet50d_pruned", in_chans=1, num_classes=5, global_pool="catavgmax").eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 5)
    headless = zoo.create_model("ecaresnet50d_pruned", num_classes=0).eval()
    assert headless(torch.randn(1, 3, 64, 64)).shape == (1, 2022)


def test_an_entry_equal_to_the_model_leaves_the_module_untouched() -> None:
    model = copy.deepcopy(built("ecaresnet50d"))
    gate = model.get_submodule("layer1.0.se.conv")  # the ECA kernel ([1, 1, 5]) depends on the unpruned width
    stem = model.get_submodule("conv1.0")
    PRUNER.apply(model, pruned_layout("ecaresnet50d_pruned"))
    assert model.get_submodule("layer1.0.se.conv") is gate
    assert model.get_submodule("conv1.0") is stem
    assert shapes(model) == reference("ecaresnet50d_pruned")["state_dict"]


# -- a user's spec -----------------------------------------------------------------------------


def _half_layer1_text() -> str:
    # resnet18's layer1 inner widths halved: conv1 of each block and its norm, and the next conv's input
    entries = []
    for b in (0, 1):
        entries += [f"layer1.{b}.conv1.weight:[32, 64, 3, 3]", f"layer1.{b}.bn1.weight:[32]"]
        entries += [f"layer1.{b}.conv2.weight:[64, 32, 3, 3]"]
    return "***".join(entries)


def test_a_users_spec_applies_from_a_path_a_prunespec_or_text(tmp_path: Path) -> None:
    text = _half_layer1_text()
    path = tmp_path / "spec.txt"
    path.write_text(text)
    for given in (str(path), path, parse_prune_spec(text)):
        model = zoo.create_model("resnet18", prune_spec=given)
        got = shapes(model)
        assert got["layer1.0.conv1.weight"] == [32, 64, 3, 3]
        assert got["layer1.1.bn1.running_mean"] == [32]
        assert got["layer1.1.conv2.weight"] == [64, 32, 3, 3]
        assert params(model) < params(built("resnet18"))
        assert model(x64()).shape == (2, 1000)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        # conv out-channels against its norm
        ("layer1.0.conv1.weight:[32, 64, 3, 3]", r"layer1\.0\.bn1.*64.*32.*layer1\.0\.conv1"),
        # the next layer's in-channels
        ("layer1.0.conv1.weight:[32, 64, 3, 3]***layer1.0.bn1.weight:[32]", r"layer1\.0\.conv2.*64.*32"),
        # a residual sum: the block's output against its shortcut
        (
            "layer1.0.conv2.weight:[32, 64, 3, 3]***layer1.0.bn2.weight:[32]",
            r"inside layer 'layer1\.0'.*32 channels from 'layer1\.0\.bn2', 64 channels",
        ),
        ("layer9.conv.weight:[3, 3, 3, 3]", r"layer9\.conv\.weight.*does not have"),
        ("layer1.0.conv1.weight:[3, 3]", r"layer1\.0\.conv1\.weight.*rank 2.*rank 4"),
        ("layer1.0.conv1.weight:[64, 64, 5, 5]", r"kernel"),
        ("layer1.0.conv1.weight:[64, 64, 3, 3", r"malformed"),
    ],
)
def test_a_spec_that_does_not_fit_names_the_layer_and_widths(text: str, pattern: str) -> None:
    with pytest.raises(PruneSpecError, match=pattern):
        zoo.create_model("resnet18", prune_spec=text)


def test_a_failed_apply_leaves_the_model_as_it_was() -> None:
    model = copy.deepcopy(built("resnet18"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PruneSpecError):
        PRUNER.apply(model, "layer1.0.conv1.weight:[32, 64, 3, 3]***layer1.0.bn1.weight:[32]")
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_eca_gate_takes_the_kernel_a_spec_gives_it() -> None:
    model = copy.deepcopy(built("ecaresnet50d"))
    PRUNER.apply(model, "layer2.0.se.conv.weight:[1, 1, 3]")
    gate = model.get_submodule("layer2.0.se.conv")
    assert isinstance(gate, nn.Conv1d)
    assert (gate.kernel_size, gate.padding) == ((3,), (1,))
    assert model(x64()).shape == (2, 1000)
    with pytest.raises(PruneSpecError, match="kernel"):
        PRUNER.apply(model, "layer2.0.se.conv.weight:[1, 1, 4]")  # an even kernel cannot keep the width


def test_residual_group_records_are_checked() -> None:
    text = pruned_layout("ecaresnet50d_pruned").replace("_conv3_M.weight:[256, 19]", "_conv3_M.weight:[256, 20]")
    with pytest.raises(PruneSpecError, match=r"layer1\.2\.conv3.*20.*256.*19"):
        PRUNER.check(copy.deepcopy(built("ecaresnet50d")), parse_prune_spec(text))


class Toy(nn.Module):
    """A stem, a depthwise and a grouped conv, a norm and a classifier: the layer kinds a spec resizes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 1, groups=4)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.grouped(torch.relu(self.bn(self.dw(self.stem(x)))))
        out: torch.Tensor = self.head(x.mean((2, 3)))
        return out


def test_depthwise_and_grouped_convs_resize_or_refuse() -> None:
    with pytest.raises(PruneSpecError, match=r"'grouped'.*6 output channels are not divisible by 4"):
        PRUNER.apply(Toy(), "grouped.weight:[6, 2, 1, 1]")
    with pytest.raises(PruneSpecError, match=r"'grouped'.*takes 8 channels but receives 6 from 'bn'"):
        PRUNER.apply(Toy(), "stem.weight:[6, 3, 3, 3]***dw.weight:[6, 1, 3, 3]***bn.weight:[6]")
    with pytest.raises(PruneSpecError, match=r"'dw' is depthwise"):
        PRUNER.apply(Toy(), "dw.weight:[6, 2, 3, 3]")
    grouped = PRUNER.apply(Toy(), "grouped.weight:[4, 2, 1, 1]***head.weight:[3, 4]")
    assert isinstance(grouped, Toy)
    assert (grouped.grouped.in_channels, grouped.grouped.out_channels, grouped.grouped.groups) == (8, 4, 4)
    assert grouped(torch.randn(1, 3, 8, 8)).shape == (1, 3)
    depthwise = PRUNER.apply(
        Toy(), "stem.weight:[4, 3, 3, 3]***dw.weight:[4, 1, 3, 3]***bn.weight:[4]***grouped.weight:[8, 1, 1, 1]"
    )
    assert isinstance(depthwise, Toy)
    assert (depthwise.dw.in_channels, depthwise.dw.groups, depthwise.grouped.in_channels) == (4, 4, 4)
    assert depthwise.stem.bias is not None
    assert depthwise.stem.bias.shape == (4,)
    assert depthwise(torch.randn(1, 3, 8, 8)).shape == (1, 3)


def test_apply_keeps_meta_parameters_on_meta() -> None:
    with parameters_on_meta():
        model = (
            zoo.api.default_zoo()
            .get_spec("resnet18")
            .constructor(**zoo.api.default_zoo().get_spec("resnet18").model_args)
        )
    PRUNER.apply(model, _half_layer1_text())
    assert model.get_parameter("layer1.0.conv1.weight").is_meta
    assert not model.get_buffer("layer1.0.bn1.running_mean").is_meta  # buffers are real on the pretrained path
    assert list(model.get_parameter("layer1.0.bn1.weight").shape) == [32]


# -- derive ------------------------------------------------------------------------------------


@functools.cache
def derived(ratio: float) -> tuple[PruneSpec, nn.Module]:
    spec, model = PRUNER.derive(built("resnet18"), ratio)
    return spec, model.eval()


def test_ratio_zero_reproduces_the_original_exactly() -> None:
    _, model = derived(0.0)
    assert shapes(model) == shapes(built("resnet18"))
    with torch.no_grad():
        assert torch.equal(model(x64()), built("resnet18")(x64()))


def test_parameters_and_flops_fall_with_the_ratio() -> None:
    costs = [(params(m), count_flops(m, 64)) for m in (derived(r)[1] for r in (0.0, 0.25, 0.5, 0.75))]
    assert all(a[0] > b[0] and a[1] > b[1] for a, b in itertools.pairwise(costs))


def test_cost_is_counted_at_the_size_a_model_was_built_for_unless_told() -> None:
    vit = zoo.create_model(
        "vit_tiny_patch16_224", depth=1, embed_dim=32, num_heads=2, num_classes=5, img_size=(64, 96)
    ).eval()
    cost = measure(vit, repeats=1)  # a 224 px probe is refused by a ViT built for 64x96
    assert cost.flops == count_flops(vit) > 4 * 6 * 32 * 3 * 16 * 16  # at least its 4 x 6 patch embeddings
    assert cost.params == params(vit)
    assert cost.seconds is not None
    r18 = built("resnet18")
    assert count_flops(r18) == count_flops(r18, 224) > count_flops(r18, 64)  # any-size models: 224 as before


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_the_derived_spec_round_trips_and_rebuilds_the_layout(ratio: float) -> None:
    spec, model = derived(ratio)
    assert parse_prune_spec(spec.to_text()) == spec
    rebuilt = zoo.create_model("resnet18", prune_spec=spec.to_text())
    assert shapes(rebuilt) == shapes(model)
    # same inputs, same output shapes, taps at the pruned widths
    with torch.no_grad():
        assert model(x64()).shape == built("resnet18")(x64()).shape
        extractor = FeatureFactory().wrap(model, FeatureCfg(feature_cls="list"))
        taps = extractor.forward_taps(x64())
    assert [t.shape[1] for t in taps] == [f.num_chs for f in model.feature_info]  # type: ignore[union-attr]  # ResNet
    assert [t.shape[1] for t in taps] != [f.num_chs for f in built("resnet18").feature_info]


def test_derive_keeps_the_largest_l1_channels_and_prunes_residual_groups_as_one() -> None:
    original = built("resnet18")
    _, model = derived(0.5)

    def l1(conv: nn.Module) -> torch.Tensor:
        assert isinstance(conv, nn.Conv2d)
        return conv.weight.detach().abs().flatten(1).sum(1)

    # a space of its own: layer2.0.conv1's output, read by bn1 only
    kept = torch.sort(torch.topk(l1(original.get_submodule("layer2.0.conv1")), 64).indices).values
    torch.testing.assert_close(
        model.get_parameter("layer2.0.bn1.weight"), original.get_parameter("layer2.0.bn1.weight")[kept]
    )
    # the stem and layer1's residual sums are one space: scored together, sliced alike everywhere
    score = sum(l1(original.get_submodule(c)) for c in ("conv1", "layer1.0.conv2", "layer1.1.conv2"))
    assert isinstance(score, torch.Tensor)
    kept = torch.sort(torch.topk(score, 32).indices).values
    for bn in ("bn1", "layer1.0.bn2", "layer1.1.bn2"):
        torch.testing.assert_close(
            model.get_buffer(f"{bn}.running_var"), original.get_buffer(f"{bn}.running_var")[kept]
        )
    # the classifier keeps its classes; its input follows layer4's kept channels
    assert isinstance(model.fc, nn.Linear)
    assert model.fc.out_features == 1000


def test_derive_follows_se_and_eca_gates_and_grouped_convs() -> None:
    for name in ("seresnet50", "ecaresnet50d", "resnext50_32x4d"):
        original = zoo.create_model(name, num_classes=4, layers=(1, 1, 1, 1)).eval()  # one block per stage
        _, same = PRUNER.derive(original, 0.0)
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(same.eval()(x), original(x)), name
        _, half = PRUNER.derive(original, 0.5)
        assert params(half) < params(original)
        assert half.eval()(x).shape == (1, 4)
        if name == "resnext50_32x4d":  # grouped convs' spaces stay whole
            key = "layer1.0.conv2.weight"
            assert half.get_parameter(key).shape == original.get_parameter(key).shape


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))
        return out


def test_a_structure_that_cannot_be_pruned_names_the_blocking_layer() -> None:
    with pytest.raises(ZooError, match=r"cannot be pruned.*cat"):
        PRUNER.derive(Concat(), 0.5)
    # a function the tracer records by itself is named as a reader knows it, not by a built-in's repr
    with pytest.raises(ZooError, match=r"layer 'maxpool.1' applies torch\.conv2d to channels") as e:
        PRUNER.derive(zoo.create_model("resnetblur50", layers=(1, 1, 1, 1)), 0.5)
    assert "built-in" not in str(e.value)
    with pytest.raises(ZooError, match=r"global_pool"):
        PRUNER.derive(zoo.create_model("resnet18", global_pool="catavgmax"), 0.5)
    with pytest.raises(InvalidValueError, match="ratio"):
        PRUNER.derive(Concat(), 1.0)


def test_meta_clone_copies_no_memory() -> None:
    clone = meta_clone(built("resnet18"))
    assert all(t.is_meta for t in clone.state_dict().values())
    assert shapes(clone) == shapes(built("resnet18"))


def test_cli_prune_writes_a_spec_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.cli import main

    out = tmp_path / "r18.txt"
    assert main(["prune", "resnet18", "--ratio", "0.5", "--out", str(out), "--image-size", "32"]) == 0
    spec = parse_prune_spec(out.read_text())
    assert shapes(zoo.create_model("resnet18", prune_spec=out)) == shapes(derived(0.5)[1])
    printed = capsys.readouterr().out
    assert f"{params(built('resnet18')):,}" in printed
    assert f"{params(derived(0.5)[1]):,}" in printed
    assert "FLOPs" in printed
    assert "forward" in printed
    assert len(spec) > 0
    assert main(["prune", "resnet18", "--ratio", "2", "--out", str(out)]) == 2
