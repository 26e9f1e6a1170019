"""CSPNet and DarkNet: reference taps, output_stride, in-place ABN, drop rates, argument checks, surface; the CS3
names' focus stem, cs3 stages, edge blocks and squeeze-and-excitation, and DarkNet-AA's pooled downsampling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from model_checks import (
    FACTORY,
    check_classifier_reset_and_pooling,
    check_drop_rate_only_in_training,
    check_grad_checkpointing,
    check_intermediates,
    check_pretrained,
    check_prune,
    check_reference_taps,
    check_script_and_fx,
    images,
    meta_model,
    small_model,
    taps_by_hooks,
)
from modelcache import built_as
from weights_support import CheckpointServer
from zoo.archs.cspnet import CrossStage3, CspNet, DarkBlock, DarkStage, EdgeBlock, StageCfg, StemCfg
from zoo.archs.layers import BatchNormAct2d, DropPath, InPlaceAbn2d, SEModule, create_attn, make_norm_act
from zoo.domain.values import FeatureCfg

X = images()
T = TypeVar("T", bound=nn.Module)


def built(name: str) -> CspNet:
    """The session's one build of name (tests/modelcache.py)."""
    return built_as(name, CspNet)


def small(kind: str = "csp", /, **kwargs: object) -> CspNet:
    """Three narrow stages of the kind asked for: 'csp', 'dark', 'aa' (dark with avg_down), 'resnet' behind a
    pooled stem, or 'cs3' (dark then edge blocks with SE, SiLU) behind a focus stem."""
    stem = StemCfg(out_chs=(8,), kernel_size=3, stride=1)
    if kind in ("dark", "aa"):
        stages = tuple(
            StageCfg(1, c, stage_type="dark", block_type="dark", bottle_ratio=0.5, avg_down=kind == "aa")
            for c in (8, 16, 32)
        )
    elif kind == "cs3":
        stem = StemCfg(out_chs=(8,), kernel_size=6, stride=2, padding=2)
        stages = tuple(
            StageCfg(2, c, stage_type="cs3", block_type=b, block_ratio=0.5, bottle_ratio=r, attn_layer="se")
            for c, b, r in ((16, "dark", 1.0), (32, "edge", 1.5), (64, "edge", 1.5))
        )
        kwargs = {"act_layer": "silu", **kwargs}
    elif kind == "resnet":
        stem = StemCfg(out_chs=(8, 8, 16), stride=4, pool=True)
        stages = tuple(
            StageCfg(2, c, stride=s, groups=4, expand_ratio=1.0, block_ratio=0.5, cross_linear=True)
            for c, s in ((16, 1), (32, 2), (64, 2))
        )
    else:
        stages = tuple(
            StageCfg(2, c, expand_ratio=2.0, bottle_ratio=0.5, down_growth=True, block_type="dark") for c in (8, 16, 32)
        )
    return small_model(CspNet, {"stem_cfg": stem, "stage_cfgs": stages, "num_classes": 5}, kwargs)


@pytest.mark.drawn_names(family="cspnet")  # the run's drawn cspnet names (tests/tiers.py)
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_feature_info(name: str, output_stride: int) -> None:
    model = meta_model(name, CspNet, output_stride=output_stride)
    check_reference_taps(model, name, output_stride=output_stride)


def test_surface_forward_intermediates() -> None:
    check_intermediates(built("darknet17"), X, later="stages.1")
    # a tap inside the stem, before its pool
    check_intermediates(small("resnet"), X, later="stem.pool")


@pytest.mark.parametrize("kind", ["dark", "aa", "resnet", "cs3"])
def test_surface_prune(kind: str) -> None:
    check_prune(small(kind).eval(), X)


def test_prune_to_the_stem_tap_keeps_the_stem_up_to_it() -> None:
    model = small("resnet").eval()
    with torch.no_grad():
        taps = model.forward_intermediates(X, intermediates_only=True)
    assert model.prune_intermediate_layers([0]) == [0]
    assert [n for n, _ in model.stem.named_children()] == ["conv1", "conv2", "conv3"]  # the pool after the tap goes
    assert len(model.stages) == 0
    with torch.no_grad():
        assert torch.equal(model(X), taps[0])


@pytest.mark.parametrize("kind", ["csp", "dark", "aa", "resnet", "cs3"])
def test_surface_script_and_fx(kind: str) -> None:
    check_script_and_fx(small(kind, drop_path_rate=0.1), X)
    if kind != "cs3":  # in-place ABN's activation is leaky ReLU, CS3's SiLU
        check_script_and_fx(small(kind, norm_layer="iabn"), X)


@pytest.mark.parametrize("norm_layer", ["batchnorm", "iabn"])
def test_grad_checkpointing_changes_nothing_but_memory(norm_layer: str) -> None:
    check_grad_checkpointing(small(norm_layer=norm_layer), images(2, 32, 32))
    model = small(norm_layer=norm_layer)
    with pytest.raises(zoo.ZooError, match="enable"):
        model.set_grad_checkpointing(None)  # type: ignore[arg-type]  # what a caller could pass


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_dilates_instead_of_striding(output_stride: int) -> None:
    model = small("dark", output_stride=output_stride).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 64, 64))
    assert feats.shape[-1] == 64 // min(output_stride, 8)  # the small model strides 8 at most
    full = zoo.create_model("darknet17", output_stride=output_stride, num_classes=0).eval()
    with torch.no_grad():
        assert full.forward_features(X).shape == (1, 1024, 64 // output_stride, 64 // output_stride)
    dilations = {m.dilation[0] for m in full.modules() if isinstance(m, nn.Conv2d)}
    assert max(dilations) == 32 // output_stride


def test_in_place_abn_layout_and_math() -> None:
    norm = InPlaceAbn2d(6)
    assert set(norm.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    reference_bn = nn.BatchNorm2d(6)
    reference_bn.load_state_dict({**norm.state_dict(), "num_batches_tracked": torch.tensor(0)})
    x = torch.randn(4, 6, 5, 5)
    for mode in (True, False):  # train first: both then hold the same updated statistics for eval
        norm.train(mode)
        reference_bn.train(mode)
        expected = F.leaky_relu(reference_bn(x), 0.01)
        torch.testing.assert_close(norm(x.clone()), expected)
        torch.testing.assert_close(norm.running_mean, reference_bn.running_mean)
        torch.testing.assert_close(norm.running_var, reference_bn.running_var)
    linear = InPlaceAbn2d(6, apply_act=False).eval()
    assert (linear(-torch.ones(1, 6, 2, 2)) < 0).all()


def test_norm_act_by_name() -> None:
    assert isinstance(make_norm_act("iabn", 4), InPlaceAbn2d)
    assert isinstance(make_norm_act("iabn", 4, apply_act=False, act_layer="relu").act, nn.Identity)
    leaky = make_norm_act("batchnorm", 4, act_layer="leaky_relu")
    assert isinstance(leaky, BatchNormAct2d)
    assert isinstance(leaky.act, nn.LeakyReLU)
    with pytest.raises(zoo.ZooError, match="act_layer"):
        make_norm_act("iabn", 4, act_layer="relu")  # in-place ABN's activation is leaky ReLU (or none)
    with pytest.raises(zoo.ZooError, match="norm_layer"):
        make_norm_act("groupnorm", 4)


def test_iabn_models_use_the_in_place_abn_norm_only() -> None:
    with torch.device("meta"):
        iabn = zoo.create_model("cspdarknet53_iabn")
        plain = zoo.create_model("cspdarknet53")
    norms = [m for m in iabn.modules() if isinstance(m, (nn.BatchNorm2d, InPlaceAbn2d))]
    assert norms
    assert all(isinstance(m, InPlaceAbn2d) for m in norms)
    assert all(isinstance(m, BatchNormAct2d) for m in plain.modules() if isinstance(m, nn.BatchNorm2d))
    leaky = [m for m in plain.modules() if isinstance(m, nn.LeakyReLU)]
    assert leaky
    assert {m.negative_slope for m in leaky} == {0.01}


def test_iabn_model_computes_what_its_batch_norm_twin_does() -> None:
    iabn, plain = small(norm_layer="iabn"), small()
    state = plain.state_dict()
    iabn.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
    for mode in (True, False):
        iabn.train(mode)
        plain.train(mode)
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(iabn(x), plain(x))


def test_drop_path_rate_grows_with_depth() -> None:
    model = small(drop_path_rate=0.5)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    # linear over all six blocks, the first at 0 (no module)
    assert rates == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    model.train()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_drop_rate_only_in_training() -> None:
    check_drop_rate_only_in_training(small(drop_rate=0.5), X)


def test_classifier_reset_and_pooling() -> None:
    check_classifier_reset_and_pooling(small(global_pool="catavgmax"), X)


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(in_chans: int) -> None:
    model = small(in_chans=in_chans).eval()
    assert model(torch.randn(1, in_chans, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"output_stride": 4}, "output_stride"),
        ({"output_stride": 16.0}, "output_stride"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"drop_path_rate": 2}, "drop_path_rate"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"global_pool": "mean"}, "global_pool"),
        ({"norm_layer": "layernorm"}, "norm_layer"),
        ({"act_layer": "gelu"}, "act_layer"),
        ({"norm_layer": "iabn", "act_layer": "relu"}, "act_layer"),
        ({"zero_init_last": 1}, "zero_init_last"),
        ({"stage_cfgs": ()}, "stage_cfgs"),
        ({"stem_cfg": (32,)}, "stem_cfg"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        small(**kwargs)


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: StageCfg(0, 64), "depth"),
        (lambda: StageCfg(1, 64, stride=3), "stride"),
        (lambda: StageCfg(1, 64, stage_type="cs2"), "stage_type"),
        (lambda: StageCfg(1, 64, block_type="mbconv"), "block_type"),
        (lambda: StageCfg(1, 64, attn_layer="eca"), "attn_layer"),
        (lambda: StageCfg(1, 64, attn_rd_ratio=0.0), "attn_rd_ratio"),
        (lambda: StageCfg(1, 64, avg_down=1), "avg_down"),  # type: ignore[arg-type]  # a caller could
        (lambda: StageCfg(1, 64, bottle_ratio=0.0), "bottle_ratio"),
        (lambda: StageCfg(1, 64, expand_ratio="2"), "expand_ratio"),  # type: ignore[arg-type]  # a caller could
        (lambda: StageCfg(1, 64, cross_linear=1), "cross_linear"),  # type: ignore[arg-type]  # a caller could
        (lambda: StemCfg(out_chs=()), "out_chs"),
        (lambda: StemCfg(out_chs=(32,), stride=3), "stride"),
        (lambda: StemCfg(out_chs=(32,), stride=2, pool=True), "pool"),
        (lambda: StemCfg(out_chs=(32,), kernel_size=4), "kernel_size"),
        (lambda: StemCfg(out_chs=(32,), padding=-1), "padding"),
    ],
)
def test_cfgs_check_their_fields(call: object, named: str) -> None:
    assert callable(call)
    with pytest.raises(zoo.ZooError, match=named):
        call()


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(zoo.ZooError, match="drop_block_rate"):
        zoo.create_model("darknet17", drop_block_rate=0.1)


def test_pretrained_checkpoint_loads(server: CheckpointServer, cache_dir: Path) -> None:
    check_pretrained("darknet17", server, cache_dir)


@pytest.mark.parametrize("kind", ["list", "dict", "hook", "getter"])
def test_every_extractor_gives_the_taps(kind: str) -> None:
    model = built("darknet17")
    extractor = FACTORY.wrap(model, FeatureCfg(flatten_sequential=True), out_indices=(0, 2, 5), feature_cls=kind)
    with torch.no_grad():
        out = extractor(X)
        expected = taps_by_hooks(model, X)
    tensors = list(out.values()) if isinstance(out, dict) else out
    assert len(tensors) == 3
    assert all(torch.equal(a, b) for a, b in zip(tensors, [expected[0], expected[2], expected[5]], strict=True))


# -- CS3 and DarkNet-AA ---------------------------------------------------------------------------


def sub(model: nn.Module, path: str, cls: type[T]) -> T:
    """model's submodule at path, checked to be a cls."""
    module = model.get_submodule(path)
    assert isinstance(module, cls), f"{path} is a {type(module).__name__}, not a {cls.__name__}"
    return module


def test_focus_stem_is_one_padded_6x6_conv_that_halves_the_map() -> None:
    model = meta_model("cs3darknet_focus_m", CspNet)
    assert [n for n, _ in model.stem.named_children()] == ["conv1"]
    conv = sub(model, "stem.conv1.conv", nn.Conv2d)
    assert (conv.kernel_size, conv.stride, conv.padding) == ((6, 6), (2, 2), (2, 2))
    stem = small("cs3").stem.eval()
    with torch.no_grad():
        assert stem(torch.randn(1, 3, 32, 30)).shape[-2:] == (16, 15)  # padding 3 would give 17 x 16


def test_cs3_names_use_silu_and_plain_names_keep_leaky_relu() -> None:
    acts = (nn.SiLU, nn.LeakyReLU, nn.ReLU)
    cs3, dark = meta_model("cs3darknet_m", CspNet), meta_model("darknetaa53", CspNet)
    assert {type(m) for m in cs3.modules() if isinstance(m, acts)} == {nn.SiLU}
    assert {type(m) for m in dark.modules() if isinstance(m, acts)} == {nn.LeakyReLU}


def test_cs3_stage_runs_its_blocks_on_the_first_half_and_rejoins_before_one_transition() -> None:
    model = small("cs3", zero_init_last=False).eval()
    stage = sub(model, "stages.0", CrossStage3)
    assert not hasattr(stage, "conv_transition_b")
    seen: dict[str, torch.Tensor] = {}

    def keep(key: str, which: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            seen[key] = (args[0] if which == "in" else out).clone()

        return hook

    stage.conv_exp.register_forward_hook(keep("exp", "out"))
    stage.blocks.register_forward_hook(keep("block_in", "in"))
    stage.blocks.register_forward_hook(keep("block_out", "out"))
    stage.conv_transition.register_forward_hook(keep("transition_in", "in"))
    with torch.no_grad():
        model(X)
    half = stage.expand_chs // 2
    assert torch.equal(seen["block_in"], seen["exp"][:, :half])
    assert torch.equal(seen["transition_in"], torch.cat([seen["block_out"], seen["exp"][:, half:]], dim=1))


def test_cs3_stage_refuses_blocks_narrower_than_its_half() -> None:
    stage = StageCfg(1, 32, stage_type="cs3", block_ratio=0.25)
    with pytest.raises(zoo.ZooError, match="block_ratio"):
        small(stage_cfgs=(stage,))


def test_edge_block_is_a_widening_3x3_then_a_1x1_back_with_the_input_added() -> None:
    model = meta_model("cs3edgenet_x", CspNet)
    sub(model, "stages.1.blocks.0", EdgeBlock)
    conv1 = sub(model, "stages.1.blocks.0.conv1.conv", nn.Conv2d)
    conv2 = sub(model, "stages.1.blocks.0.conv2.conv", nn.Conv2d)
    assert (conv1.kernel_size, conv2.kernel_size) == ((3, 3), (1, 1))
    assert (conv1.in_channels, conv1.out_channels, conv2.out_channels) == (160, 240, 160)  # 1.5 times inside
    sub(model, "stages.1.blocks.0.attn", nn.Identity)
    edge = sub(small("cs3").eval(), "stages.1.blocks.0", EdgeBlock)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(edge(x), x)  # zero_init_last: the residual branch starts at zero
        nn.init.ones_(sub(edge, "conv2.bn", BatchNormAct2d).weight)
        assert not torch.equal(edge(x), x)


@pytest.mark.parametrize(
    ("name", "block_cls", "squeezed"),
    [("cs3sedarknet_l", DarkBlock, 16), ("cs3sedarknet_x", DarkBlock, 8), ("cs3se_edgenet_x", EdgeBlock, 32)],
)
def test_se_blocks_squeeze_their_bottleneck_with_the_models_activation(
    name: str, block_cls: type[nn.Module], squeezed: int
) -> None:
    model = meta_model(name, CspNet)
    sub(model, "stages.0.blocks.0", block_cls)
    se = sub(model, "stages.0.blocks.0.attn", SEModule)
    assert isinstance(se.act, nn.SiLU)
    assert se.fc1.out_channels == squeezed
    assert se.fc1.in_channels == sub(model, "stages.0.blocks.0.conv1.conv", nn.Conv2d).out_channels
    assert not any(isinstance(m, SEModule) for m in meta_model("cs3darknet_l", CspNet).modules())


def test_se_gates_the_first_convs_output_before_the_second() -> None:
    block = sub(small("cs3", zero_init_last=False).eval(), "stages.0.blocks.0", DarkBlock)
    se = sub(block, "attn", SEModule)
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        mid = block.conv1(x)
        gate = torch.sigmoid(se.fc2(F.silu(se.fc1(mid.mean((2, 3), keepdim=True)))))
        torch.testing.assert_close(block(x), block.conv2(mid * gate) + x)


def test_create_attn_passes_its_activation_to_se() -> None:
    se = create_attn("se", 64, rd_ratio=0.25, act_layer="silu")
    assert isinstance(se, SEModule)
    assert isinstance(se.act, nn.SiLU)
    default = create_attn("se", 64)
    assert isinstance(default, SEModule)
    assert isinstance(default.act, nn.ReLU)


def test_se_biases_start_at_zero() -> None:
    model = small("cs3")
    biases = [m.bias for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert biases
    assert all(not b.any() for b in biases)
    model.init_all_weights()
    assert all(not b.any() for b in biases)


def test_avg_down_stages_pool_then_project_and_round_odd_maps_down() -> None:
    model = meta_model("darknetaa53", CspNet)
    for i in range(5):
        sub(model, f"stages.{i}", DarkStage)
        sub(model, f"stages.{i}.conv_down.0", nn.AvgPool2d)
        assert sub(model, f"stages.{i}.conv_down.1.conv", nn.Conv2d).kernel_size == (1, 1)
    aa = small("aa").eval()
    with torch.no_grad():
        assert aa.forward_features(torch.randn(1, 3, 33, 33)).shape[-1] == 33 // 8  # floor at each pooling


@pytest.mark.parametrize("output_stride", [8, 16])
def test_avg_down_stages_past_output_stride_neither_pool_nor_dilate_their_1x1(output_stride: int) -> None:
    model = meta_model("darknetaa53", CspNet, output_stride=output_stride)
    pools = [isinstance(model.get_submodule(f"stages.{i}.conv_down.0"), nn.AvgPool2d) for i in range(5)]
    strided = {16: 4, 8: 3}[output_stride]  # the stages before output_stride is reached
    assert pools == [i < strided for i in range(5)]
    assert all(sub(model, f"stages.{i}.conv_down.1.conv", nn.Conv2d).dilation == (1, 1) for i in range(5))
