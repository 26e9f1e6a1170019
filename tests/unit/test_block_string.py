"""The block-string decoder: every option of the notation, the kinds' defaults, and what it refuses."""

from __future__ import annotations

import pytest

import zoo
from zoo.archs.layers.block_string import decode_block, decode_stages
from zoo.archs.layers.mbconv import BlockDef, Scaling, scale_repeats


def test_an_inverted_residual_with_se() -> None:
    assert decode_block("ir_r2_k3_s2_e6_c24_se0.25") == BlockDef("ir", 2, 3, 2, 24, exp_ratio=6.0, se_ratio=0.25)


def test_options_come_in_any_order() -> None:
    assert decode_block("ir_c24_se0.25_e6_s2_k3_r2") == decode_block("ir_r2_k3_s2_e6_c24_se0.25")


def test_depthwise_separable_ignores_the_expansion() -> None:
    d = decode_block("ds_r1_k3_s1_e1_c16_se0.25")
    assert (d.kind, d.exp_ratio, d.se_ratio, d.noskip, d.pw_act) == ("ds", 1.0, 0.25, False, False)


def test_dsa_activates_its_projection_and_never_skips() -> None:
    d = decode_block("dsa_r2_k3_s2_c128")
    assert (d.kind, d.pw_act, d.noskip, d.repeats, d.out_chs) == ("ds", True, True, 2, 128)


def test_mixed_kernels_and_group_splits() -> None:
    d = decode_block("ir_r3_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw")
    assert d.kernel == (3, 5, 7, 9)
    assert d.exp_kernel == d.pw_kernel == (1, 1)
    assert d.act == "silu"


@pytest.mark.parametrize(("op", "act"), [("nre", "relu"), ("nr6", "relu6"), ("nsw", "silu"), ("nhs", "hard_swish")])
def test_activation_overrides(op: str, act: str) -> None:
    assert decode_block(f"ir_r1_k3_s1_e6_c8_{op}").act == act


def test_skips() -> None:
    assert decode_block("ir_r1_k3_s1_e6_c8_noskip").noskip
    assert decode_block("cn_r1_k3_s1_e1_c16_skip").skip
    assert not decode_block("cn_r1_k1_s1_c960").skip


def test_edge_residual_width_and_groups() -> None:
    d = decode_block("er_r1_k3_s1_e4_c24_fc24_noskip")
    assert (d.kind, d.kernel, d.force_in_chs, d.exp_ratio, d.noskip) == ("er", (3,), 24, 4.0, True)
    grouped = decode_block("er_r1_k3_s1_e4_gs64_c64")
    assert grouped.group_size == 64
    assert grouped.groups(256) == 4
    assert decode_block("er_r1_k3_s2_e8_c64").groups(256) == 1  # dense by default
    assert decode_block("ir_r1_k3_s2_e8_c64").groups(256) == 256  # depthwise by default


def test_space_to_depth_marks_a_depthwise_separable_run() -> None:
    assert decode_block("ds_r1_k3_s1_e1_c16_se0.25_d1").s2d
    assert not decode_block("ds_r1_k3_s1_e1_c16_se0.25_d0").s2d


def test_condconv_experts_are_multiplied_per_definition() -> None:
    stages = decode_stages((("ds_r1_k3_s1_c16",), ("ir_r3_k5_s1_e6_c112_se0.25_cc4",)), experts_multiplier=2)
    assert stages[0][0].num_experts == 0
    assert stages[1][0].num_experts == 8


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("xx_r1_k3_s1_c8", "kind"),
        ("ir_r1_k3_s1_c8", "'e'"),
        ("ir_k3_s1_e6_c8", "'r'"),
        ("ir_r1_k3_s1_e6_c8_zz9", "zz9"),
        ("ir_r1_k4_s1_e6_c8", "kernel"),
        ("ir_r1_k3_s3_e6_c8", "stride"),
        ("ir_r1_k3.x_s1_e6_c8", "k3.x"),
        ("ir_r1_k3_s1_e6_c16_d1", "s2d"),
        ("ir_r1_k3_s1_e6_c8_nmi", "nmi"),
    ],
)
def test_malformed_strings_are_refused_by_name(text: str, named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        decode_block(text)


@pytest.mark.parametrize("arch", ["ir_r1_k3_s1_e6_c8", (), ("ir_r1_k3_s1_e6_c8",), ((),)])
def test_malformed_definitions_are_refused(arch: object) -> None:
    with pytest.raises(zoo.ZooError):
        decode_stages(arch)  # type: ignore[arg-type]  # what a caller could pass


def test_depth_truncation_and_fixed_ends() -> None:
    assert scale_repeats([1, 3], 1.2, "ceil") == [1, 4]  # 5 = ceil(4.8) blocks, the extra one to the last run
    assert scale_repeats([1, 3], 1.1, "round") == [1, 3]  # round(4.4) = 4: no growth
    assert scale_repeats([2], 0.6, "round") == [1]
    assert scale_repeats([2], 0.6, "ceil") == [2]
    stages = decode_stages((("ds_r1_k3_s1_c16",), ("ir_r2_k3_s2_e6_c24",), ("ir_r1_k3_s1_e6_c320",)))
    assert Scaling(depth_multiplier=2.0).stage_repeats(stages) == [[2], [4], [2]]
    assert Scaling(depth_multiplier=2.0, fix_first_last=True).stage_repeats(stages) == [[1], [4], [1]]
    assert Scaling(depth_multiplier=(1.0, 1.5, 3.0)).stage_repeats(stages) == [[1], [3], [3]]
    with pytest.raises(zoo.ZooError, match="depth_multiplier"):
        Scaling(depth_multiplier=(1.0, 2.0)).stage_repeats(stages)


def test_widths_round_to_the_divisor_within_the_limit() -> None:
    assert Scaling(channel_multiplier=1.1).width(24) == 24  # 26.4 -> 24 (>= 0.9 * 26.4)
    assert Scaling(channel_multiplier=0.8).width(40) == 32
    assert Scaling(channel_multiplier=1.2, divisor=16).width(40) == 48
    assert Scaling(channel_multiplier=0.5, round_limit=0.0).width(20) == 8  # 10 -> 8, not bumped to 16
