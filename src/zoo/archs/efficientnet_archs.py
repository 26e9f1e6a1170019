"""The EfficientNet family's definitions: each base network as block strings, and each name's arguments.

The block strings and scaling values are the published architectures' (read off timm 1.0.31's
definitions, so the same names get the same layouts); layers.block_string decodes them.
"""

from __future__ import annotations

from collections.abc import Sequence

from zoo.archs.layers.block_def import BlockDef
from zoo.archs.layers.block_string import decode_stages

__all__ = ["ARCHS", "EFFICIENTNET_STAGES"]

Stages = tuple[tuple[BlockDef, ...], ...]


def _stages(*stages: Sequence[str]) -> Stages:
    return decode_stages(stages)


# EfficientNet-B0 (Tan & Le, 2019): the base network every Bn (and TinyNet) scales
EFFICIENTNET_STAGES: Stages = _stages(
    ["ds_r1_k3_s1_e1_c16_se0.25"],
    ["ir_r2_k3_s2_e6_c24_se0.25"],
    ["ir_r2_k5_s2_e6_c40_se0.25"],
    ["ir_r3_k3_s2_e6_c80_se0.25"],
    ["ir_r3_k5_s1_e6_c112_se0.25"],
    ["ir_r4_k5_s2_e6_c192_se0.25"],
    ["ir_r1_k3_s1_e6_c320_se0.25"],
)
# EfficientNet-Lite: B0 without SE (and, by its arguments, ReLU6 and fixed stem, head and end stages)
_LITE = _stages(
    ["ds_r1_k3_s1_e1_c16"],
    ["ir_r2_k3_s2_e6_c24"],
    ["ir_r2_k5_s2_e6_c40"],
    ["ir_r3_k3_s2_e6_c80"],
    ["ir_r3_k5_s1_e6_c112"],
    ["ir_r4_k5_s2_e6_c192"],
    ["ir_r1_k3_s1_e6_c320"],
)


def _condconv(experts_multiplier: int) -> Stages:
    # EfficientNet-B0 with CondConv (4 experts, or 4 times experts_multiplier) in its last three stages
    arch = (
        ["ds_r1_k3_s1_e1_c16_se0.25"],
        ["ir_r2_k3_s2_e6_c24_se0.25"],
        ["ir_r2_k5_s2_e6_c40_se0.25"],
        ["ir_r3_k3_s2_e6_c80_se0.25"],
        ["ir_r3_k5_s1_e6_c112_se0.25_cc4"],
        ["ir_r4_k5_s2_e6_c192_se0.25_cc4"],
        ["ir_r1_k3_s1_e6_c320_se0.25_cc4"],
    )
    return decode_stages(arch, experts_multiplier=experts_multiplier)


def _x(exp: int) -> Stages:
    # EfficientNet-X (Li et al., 2021): space to depth in the first block, fused ReLU blocks early; 'h' (the
    # second version) expands 4x instead of 6x in stages 1-3
    return _stages(
        ["ds_r1_k3_s1_e1_c16_se0.25_d1"],
        [f"er_r2_k3_s2_e{exp}_c24_se0.25_nre"],
        [f"er_r2_k5_s2_e{exp}_c40_se0.25_nre"],
        [f"ir_r3_k3_s2_e{exp}_c80_se0.25"],
        ["ir_r3_k5_s1_e6_c112_se0.25"],
        ["ir_r4_k5_s2_e6_c192_se0.25"],
        ["ir_r1_k3_s1_e6_c320_se0.25"],
    )


# EfficientNet-EdgeTPU S/M/L: fused (edge) blocks in the early stages
_EDGE = _stages(
    ["er_r1_k3_s1_e4_c24_fc24_noskip"],
    ["er_r2_k3_s2_e8_c32"],
    ["er_r4_k3_s2_e8_c48"],
    ["ir_r5_k5_s2_e8_c96"],
    ["ir_r4_k5_s1_e8_c144"],
    ["ir_r2_k5_s2_e8_c192"],
)
_MOBILENETV1 = _stages(
    ["dsa_r1_k3_s1_c64"],
    ["dsa_r2_k3_s2_c128"],
    ["dsa_r2_k3_s2_c256"],
    ["dsa_r6_k3_s2_c512"],
    ["dsa_r2_k3_s2_c1024"],
)
_MOBILENETV2 = _stages(
    ["ds_r1_k3_s1_c16"],
    ["ir_r2_k3_s2_e6_c24"],
    ["ir_r3_k3_s2_e6_c32"],
    ["ir_r4_k3_s2_e6_c64"],
    ["ir_r3_k3_s1_e6_c96"],
    ["ir_r3_k3_s2_e6_c160"],
    ["ir_r1_k3_s1_e6_c320"],
)
# MnasNet-A1 (the 'semnasnet' names, with SE) and -B1 (the 'mnasnet' names), and the small search result
_MNASNET_A1 = _stages(
    ["ds_r1_k3_s1_e1_c16_noskip"],
    ["ir_r2_k3_s2_e6_c24"],
    ["ir_r3_k5_s2_e3_c40_se0.25"],
    ["ir_r4_k3_s2_e6_c80"],
    ["ir_r2_k3_s1_e6_c112_se0.25"],
    ["ir_r3_k5_s2_e6_c160_se0.25"],
    ["ir_r1_k3_s1_e6_c320"],
)
_MNASNET_B1 = _stages(
    ["ds_r1_k3_s1_c16_noskip"],
    ["ir_r3_k3_s2_e3_c24"],
    ["ir_r3_k5_s2_e3_c40"],
    ["ir_r3_k5_s2_e6_c80"],
    ["ir_r2_k3_s1_e6_c96"],
    ["ir_r4_k5_s2_e6_c192"],
    ["ir_r1_k3_s1_e6_c320_noskip"],
)
_MNASNET_SMALL = _stages(
    ["ds_r1_k3_s1_c8"],
    ["ir_r1_k3_s2_e3_c16"],
    ["ir_r2_k3_s2_e6_c16"],
    ["ir_r4_k5_s2_e6_c32_se0.25"],
    ["ir_r3_k3_s1_e6_c32_se0.25"],
    ["ir_r3_k5_s2_e6_c88_se0.25"],
    ["ir_r1_k3_s1_e6_c144"],
)
_SPNASNET = _stages(
    ["ds_r1_k3_s1_c16_noskip"],
    ["ir_r3_k3_s2_e3_c24"],
    ["ir_r1_k5_s2_e6_c40", "ir_r3_k3_s1_e3_c40"],
    ["ir_r1_k5_s2_e6_c80", "ir_r3_k3_s1_e3_c80"],
    ["ir_r1_k5_s1_e6_c96", "ir_r3_k5_s1_e3_c96"],
    ["ir_r4_k5_s2_e6_c192"],
    ["ir_r1_k3_s1_e6_c320_noskip"],
)
_FBNETC = _stages(
    ["ir_r1_k3_s1_e1_c16"],
    ["ir_r1_k3_s2_e6_c24", "ir_r2_k3_s1_e1_c24"],
    ["ir_r1_k5_s2_e6_c32", "ir_r1_k5_s1_e3_c32", "ir_r1_k5_s1_e6_c32", "ir_r1_k3_s1_e6_c32"],
    ["ir_r1_k5_s2_e6_c64", "ir_r1_k5_s1_e3_c64", "ir_r2_k5_s1_e6_c64"],
    ["ir_r3_k5_s1_e6_c112", "ir_r1_k5_s1_e3_c112"],
    ["ir_r4_k5_s2_e6_c184"],
    ["ir_r1_k3_s1_e6_c352"],
)
# MixNet-S and -M (Tan & Le, 2019): mixed depthwise kernels, grouped 1x1s; ReLU early, SiLU later
_MIXNET_S = _stages(
    ["ds_r1_k3_s1_e1_c16"],
    ["ir_r1_k3_a1.1_p1.1_s2_e6_c24", "ir_r1_k3_a1.1_p1.1_s1_e3_c24"],
    ["ir_r1_k3.5.7_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],
    ["ir_r1_k3.5.7_p1.1_s2_e6_c80_se0.25_nsw", "ir_r2_k3.5_p1.1_s1_e6_c80_se0.25_nsw"],
    ["ir_r1_k3.5.7_a1.1_p1.1_s1_e6_c120_se0.5_nsw", "ir_r2_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9.11_s2_e6_c200_se0.5_nsw", "ir_r2_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],
)
_MIXNET_M = _stages(
    ["ds_r1_k3_s1_e1_c24"],
    ["ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c32", "ir_r1_k3_a1.1_p1.1_s1_e3_c32"],
    ["ir_r1_k3.5.7.9_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],
    ["ir_r1_k3.5.7_s2_e6_c80_se0.25_nsw", "ir_r3_k3.5.7.9_a1.1_p1.1_s1_e6_c80_se0.25_nsw"],
    ["ir_r1_k3_s1_e6_c120_se0.5_nsw", "ir_r3_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9_s2_e6_c200_se0.5_nsw", "ir_r3_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],
)


def _v2_s(first: str, last: str) -> Stages:
    return _stages(
        [first],
        ["er_r4_k3_s2_e4_c48"],
        ["er_r4_k3_s2_e4_c64"],
        ["ir_r6_k3_s2_e4_c128_se0.25"],
        ["ir_r9_k3_s1_e6_c160_se0.25"],
        [last],
    )


# EfficientNetV2 (Tan & Le, 2021); the 'rw' definition was timm's own small model, before the paper's code
_V2_S = _v2_s("cn_r2_k3_s1_e1_c24_skip", "ir_r15_k3_s2_e6_c256_se0.25")
_V2_S_RW = _v2_s("er_r2_k3_s1_e1_c24", "ir_r15_k3_s2_e6_c272_se0.25")
_V2_BASE = _stages(
    ["cn_r1_k3_s1_e1_c16_skip"],
    ["er_r2_k3_s2_e4_c32"],
    ["er_r2_k3_s2_e4_c48"],
    ["ir_r3_k3_s2_e4_c96_se0.25"],
    ["ir_r5_k3_s1_e6_c112_se0.25"],
    ["ir_r8_k3_s2_e6_c192_se0.25"],
)
_V2_M = _stages(
    ["cn_r3_k3_s1_e1_c24_skip"],
    ["er_r5_k3_s2_e4_c48"],
    ["er_r5_k3_s2_e4_c80"],
    ["ir_r7_k3_s2_e4_c160_se0.25"],
    ["ir_r14_k3_s1_e6_c176_se0.25"],
    ["ir_r18_k3_s2_e6_c304_se0.25"],
    ["ir_r5_k3_s1_e6_c512_se0.25"],
)
_V2_L = _stages(
    ["cn_r4_k3_s1_e1_c32_skip"],
    ["er_r7_k3_s2_e4_c64"],
    ["er_r7_k3_s2_e4_c96"],
    ["ir_r10_k3_s2_e4_c192_se0.25"],
    ["ir_r19_k3_s1_e6_c224_se0.25"],
    ["ir_r25_k3_s2_e6_c384_se0.25"],
    ["ir_r7_k3_s1_e6_c640_se0.25"],
)
_V2_XL = _stages(
    ["cn_r4_k3_s1_e1_c32_skip"],
    ["er_r8_k3_s2_e4_c64"],
    ["er_r8_k3_s2_e4_c96"],
    ["ir_r16_k3_s2_e4_c192_se0.25"],
    ["ir_r24_k3_s1_e6_c256_se0.25"],
    ["ir_r32_k3_s2_e6_c512_se0.25"],
    ["ir_r8_k3_s1_e6_c640_se0.25"],
)


def _edgetpu_v2(chs: Sequence[int], group_size: int) -> Stages:
    c = chs
    return _stages(
        [f"cn_r1_k1_s1_c{c[0]}"],
        [f"er_r1_k3_s2_e8_c{c[1]}", f"er_r1_k3_s1_e4_gs{group_size}_c{c[1]}"],
        [
            f"er_r1_k3_s2_e8_c{c[2]}",
            f"er_r1_k3_s1_e4_gs{group_size}_c{c[2]}",
            f"er_r1_k3_s1_e4_c{c[2]}",
            f"er_r1_k3_s1_e4_gs{group_size}_c{c[2]}",
        ],
        [f"er_r1_k3_s2_e8_c{c[3]}", f"ir_r3_k3_s1_e4_c{c[3]}"],
        [f"ir_r1_k3_s1_e8_c{c[4]}", f"ir_r3_k3_s1_e4_c{c[4]}"],
        [f"ir_r1_k3_s2_e8_c{c[5]}", f"ir_r3_k3_s1_e4_c{c[5]}"],
        [f"ir_r1_k3_s1_e8_c{c[6]}"],
    )


_TEST = _stages(
    ["cn_r1_k3_s1_e1_c16_skip"],
    ["er_r1_k3_s2_e4_c24"],
    ["er_r1_k3_s2_e4_c32"],
    ["ir_r1_k3_s2_e4_c48_se0.25"],
    ["ir_r1_k3_s2_e4_c64_se0.25"],
)

Args = dict[str, object]
# the TF-trained checkpoints: TensorFlow's batch-norm eps and 'same' padding
_TF: Args = {"bn_eps": 1e-3, "same_pad": True}


def _b(width: float, depth: float) -> Args:
    return {"stages": EFFICIENTNET_STAGES, "channel_multiplier": width, "depth_multiplier": depth}


def _lite(width: float, depth: float) -> Args:
    return {
        "stages": _LITE,
        "channel_multiplier": width,
        "depth_multiplier": depth,
        "fix_first_last": True,
        "fix_stem": True,
        "head_scaling": "fixed",
        "act_layer": "relu6",
    }


def _mnv2(width: float, depth: float = 1.0, fixed: bool = False) -> Args:
    fix: Args = {"fix_stem": True, "fix_first_last": True, "head_scaling": "fixed"} if fixed else {}
    return {
        "stages": _MOBILENETV2,
        "channel_multiplier": width,
        "depth_multiplier": depth,
        "head_scaling": "grow",
        "act_layer": "relu6",
        **fix,
    }


def _mnv1(width: float, head: bool = False) -> Args:
    return {
        "stages": _MOBILENETV1,
        "channel_multiplier": width,
        "num_features": 1024 if head else 0,
        "head_scaling": "grow",
        "act_layer": "relu6",
    }


def _nas(stages: Stages, width: float, stem: int = 32, head: int = 1280) -> Args:
    # the NAS-found ReLU networks keep their head width whatever the multiplier
    return {
        "stages": stages,
        "channel_multiplier": width,
        "stem_size": stem,
        "num_features": head,
        "head_scaling": "fixed",
        "act_layer": "relu",
    }


def _tinynet(width: float, depth: float) -> Args:
    return {
        **_b(width, depth),
        "depth_trunc": "round",
        "fix_stem": True,
        "head_scaling": "grow",
    }


def _mixnet(stages: Stages, width: float, depth: float = 1.0, stem: int = 24) -> Args:
    return {
        **_nas(stages, width, stem, 1536),
        "depth_multiplier": depth,
        "depth_trunc": "round",
    }


def _v2(stages: Stages, width: float = 1.0, depth: float | tuple[float, ...] = 1.0, **extra: object) -> Args:
    return {"stages": stages, "channel_multiplier": width, "depth_multiplier": depth, "stem_size": 24, **extra}


def _edge(width: float, depth: float) -> Args:
    return {"stages": _EDGE, "channel_multiplier": width, "depth_multiplier": depth, "act_layer": "relu"}


def _v2_base(width: float, depth: float) -> Args:
    return {**_v2(_V2_BASE, width, depth), "stem_size": 32, "round_limit": 0.0, **_TF}


def _test(norm: str) -> Args:
    # the reference's tiny test model, with batch norm or one of its other norms (layers.block_norms)
    return {"stages": _TEST, "stem_size": 24, "num_features": 256, "round_limit": 0.0, "norm_layer": norm}


ARCHS: dict[str, Args] = {
    "efficientnet_b0": _b(1.0, 1.0),
    "efficientnet_b1": _b(1.0, 1.1),
    "efficientnet_b2": _b(1.1, 1.2),
    "efficientnet_b3": _b(1.2, 1.4),
    "efficientnet_b4": _b(1.4, 1.8),
    "efficientnet_b5": _b(1.6, 2.2),
    "efficientnet_b1_pruned": {**_b(1.0, 1.1), **_TF},
    "efficientnet_b2_pruned": {**_b(1.1, 1.2), **_TF},
    "efficientnet_b3_pruned": {**_b(1.2, 1.4), **_TF},
    "tf_efficientnet_b0": {**_b(1.0, 1.0), **_TF},
    "tf_efficientnet_b1": {**_b(1.0, 1.1), **_TF},
    "tf_efficientnet_b2": {**_b(1.1, 1.2), **_TF},
    "tf_efficientnet_b3": {**_b(1.2, 1.4), **_TF},
    "tf_efficientnet_b4": {**_b(1.4, 1.8), **_TF},
    "tf_efficientnet_b5": {**_b(1.6, 2.2), **_TF},
    "tf_efficientnet_b6": {**_b(1.8, 2.6), **_TF},
    "tf_efficientnet_b7": {**_b(2.0, 3.1), **_TF},
    "tf_efficientnet_b8": {**_b(2.2, 3.6), **_TF},
    "tf_efficientnet_l2": {**_b(4.3, 5.3), **_TF},
    "tf_efficientnet_cc_b0_4e": {**_b(1.0, 1.0), "stages": _condconv(1), **_TF},
    "tf_efficientnet_cc_b0_8e": {**_b(1.0, 1.0), "stages": _condconv(2), **_TF},
    "tf_efficientnet_cc_b1_8e": {**_b(1.0, 1.1), "stages": _condconv(2), **_TF},
    "efficientnet_x_b5": {**_b(1.6, 2.2), "stages": _x(6)},
    "efficientnet_h_b5": {**_b(1.92, 2.2), "stages": _x(4)},
    "efficientnet_lite0": _lite(1.0, 1.0),
    "tf_efficientnet_lite0": {**_lite(1.0, 1.0), **_TF},
    "tf_efficientnet_lite1": {**_lite(1.0, 1.1), **_TF},
    "tf_efficientnet_lite2": {**_lite(1.1, 1.2), **_TF},
    "tf_efficientnet_lite3": {**_lite(1.2, 1.4), **_TF},
    "tf_efficientnet_lite4": {**_lite(1.4, 1.8), **_TF},
    "mobilenetv2_050": _mnv2(0.5),
    "mobilenetv2_100": _mnv2(1.0),
    "mobilenetv2_140": _mnv2(1.4),
    "mobilenetv2_110d": _mnv2(1.1, 1.2, fixed=True),
    "mobilenetv2_120d": _mnv2(1.2, 1.4, fixed=True),
    "mobilenetv1_100": _mnv1(1.0),
    "mobilenetv1_100h": _mnv1(1.0, head=True),
    "mobilenetv1_125": _mnv1(1.25),
    "mnasnet_100": _nas(_MNASNET_B1, 1.0),
    "mnasnet_small": _nas(_MNASNET_SMALL, 1.0, stem=8),
    "semnasnet_075": _nas(_MNASNET_A1, 0.75),
    "semnasnet_100": _nas(_MNASNET_A1, 1.0),
    "spnasnet_100": _nas(_SPNASNET, 1.0),
    # its published checkpoint was trained with TF's eps; the reference applies it only when loading it
    "fbnetc_100": {**_nas(_FBNETC, 1.0, stem=16, head=1984), "bn_eps": 1e-3},
    "tinynet_a": _tinynet(1.0, 1.2),
    "tinynet_b": _tinynet(0.75, 1.1),
    "tinynet_c": _tinynet(0.54, 0.85),
    "tinynet_d": _tinynet(0.54, 0.695),
    "tinynet_e": _tinynet(0.51, 0.6),
    "mixnet_s": {**_mixnet(_MIXNET_S, 1.0, stem=16), "depth_trunc": "ceil"},
    "mixnet_m": _mixnet(_MIXNET_M, 1.0),
    "mixnet_l": _mixnet(_MIXNET_M, 1.3),
    "mixnet_xl": _mixnet(_MIXNET_M, 1.6, 1.2),
    "tf_mixnet_s": {**_mixnet(_MIXNET_S, 1.0, stem=16), "depth_trunc": "ceil", **_TF},
    "tf_mixnet_m": {**_mixnet(_MIXNET_M, 1.0), **_TF},
    "tf_mixnet_l": {**_mixnet(_MIXNET_M, 1.3), **_TF},
    "efficientnetv2_rw_t": _v2(_V2_S, 0.8, 0.9),
    "gc_efficientnetv2_rw_t": _v2(_V2_S, 0.8, 0.9, se_layer="gc"),
    "efficientnetv2_rw_s": _v2(_V2_S_RW, num_features=1792),
    "efficientnetv2_rw_m": _v2(_V2_S_RW, 1.2, (1.2,) * 4 + (1.6,) * 2, num_features=1792),
    "tf_efficientnetv2_s": {**_v2(_V2_S), **_TF},
    "tf_efficientnetv2_m": {**_v2(_V2_M, head_scaling="fixed"), **_TF},
    "tf_efficientnetv2_l": {**_v2(_V2_L, stem_size=32, head_scaling="fixed"), **_TF},
    "tf_efficientnetv2_xl": {**_v2(_V2_XL, stem_size=32, head_scaling="fixed"), **_TF},
    "tf_efficientnetv2_b0": _v2_base(1.0, 1.0),
    "tf_efficientnetv2_b1": _v2_base(1.0, 1.1),
    "tf_efficientnetv2_b2": _v2_base(1.1, 1.2),
    "tf_efficientnetv2_b3": _v2_base(1.2, 1.4),
    "efficientnet_es": _edge(1.0, 1.0),
    "efficientnet_em": _edge(1.0, 1.1),
    "efficientnet_el": _edge(1.2, 1.4),
    # the published '_pruned' edge checkpoints have the unpruned layout
    "efficientnet_es_pruned": _edge(1.0, 1.0),
    "efficientnet_el_pruned": _edge(1.2, 1.4),
    "tf_efficientnet_es": {**_edge(1.0, 1.0), **_TF},
    "tf_efficientnet_em": {**_edge(1.0, 1.1), **_TF},
    "tf_efficientnet_el": {**_edge(1.2, 1.4), **_TF},
    "mobilenet_edgetpu_v2_m": {
        "stages": _edgetpu_v2((32, 64, 80, 160, 192, 240, 320), 64),
        "stem_size": 64,
        "stem_kernel_size": 5,
        "num_features": 1344,
        "head_scaling": "fixed",
        "act_layer": "relu",
    },
    "test_efficientnet": _test("batchnorm"),
    "test_efficientnet_gn": _test("groupnorm"),
    "test_efficientnet_ln": _test("layernorm"),
    "test_efficientnet_evos": _test("evonorm"),
}
