"""The MobileNetV3 family's architectures: each name's block stages (the reference's arch_def strings) and arguments.

MobileNetV3 Large/Small and their 'minimal' forms (Howard et al., 2019), LCNet (Cui et al., 2021) and
FBNetV3 (Dai et al., 2020); MobileNetV4's are in mobilenetv4_archs. The definitions are the published
ones, as timm 1.0.31 writes them.
"""

from __future__ import annotations

from zoo.archs.layers.block_string import decode_stages
from zoo.archs.layers.mbconv import BlockDef
from zoo.archs.mobilenetv4_archs import MNV4_ARCHS

__all__ = ["ARCHS", "MOBILENETV3_LARGE_STAGES"]

Stages = tuple[tuple[BlockDef, ...], ...]

# TensorFlow's batch-norm eps, which the ports of its weights (and the weights trained like them) need
TF_BN_EPS = 1e-3

# MobileNetV3-Large: ReLU in the first stages, hard-swish (the model's) after
MOBILENETV3_LARGE_STAGES: Stages = decode_stages(
    (
        ("ds_r1_k3_s1_e1_c16_nre",),
        ("ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"),
        ("ir_r3_k5_s2_e3_c40_se0.25_nre",),
        ("ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"),
        ("ir_r2_k3_s1_e6_c112_se0.25",),
        ("ir_r3_k5_s2_e6_c160_se0.25",),
        ("cn_r1_k1_s1_c960",),
    )
)
# the 'minimal' forms: no SE, no 5x5 kernels, ReLU throughout
_LARGE_MINIMAL: Stages = decode_stages(
    (
        ("ds_r1_k3_s1_e1_c16",),
        ("ir_r1_k3_s2_e4_c24", "ir_r1_k3_s1_e3_c24"),
        ("ir_r3_k3_s2_e3_c40",),
        ("ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"),
        ("ir_r2_k3_s1_e6_c112",),
        ("ir_r3_k3_s2_e6_c160",),
        ("cn_r1_k1_s1_c960",),
    )
)
_SMALL: Stages = decode_stages(
    (
        ("ds_r1_k3_s2_e1_c16_se0.25_nre",),
        ("ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"),
        ("ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"),
        ("ir_r2_k5_s1_e3_c48_se0.25",),
        ("ir_r3_k5_s2_e6_c96_se0.25",),
        ("cn_r1_k1_s1_c576",),
    )
)
_SMALL_MINIMAL: Stages = decode_stages(
    (
        ("ds_r1_k3_s2_e1_c16",),
        ("ir_r1_k3_s2_e4.5_c24", "ir_r1_k3_s1_e3.67_c24"),
        ("ir_r1_k3_s2_e4_c40", "ir_r2_k3_s1_e6_c40"),
        ("ir_r2_k3_s1_e3_c48",),
        ("ir_r3_k3_s2_e6_c96",),
        ("cn_r1_k1_s1_c576",),
    )
)
# Ross Wightman's first MobileNetV3 training: the first block never residual, SE with the block's activation
_RW: Stages = decode_stages(
    (
        ("ds_r1_k3_s1_e1_c16_nre_noskip",),
        ("ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"),
        ("ir_r3_k5_s2_e3_c40_se0.25_nre",),
        ("ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"),
        ("ir_r2_k3_s1_e6_c112_se0.25",),
        ("ir_r3_k5_s2_e6_c160_se0.25",),
        ("cn_r1_k1_s1_c960",),
    )
)
# LCNet: depthwise-separable blocks only, each projection activated, no residuals, no final 1x1 stage
_LCNET: Stages = decode_stages(
    (
        ("dsa_r1_k3_s1_c32",),
        ("dsa_r2_k3_s2_c64",),
        ("dsa_r2_k3_s2_c128",),
        ("dsa_r1_k3_s2_c256", "dsa_r1_k5_s1_c256"),
        ("dsa_r4_k5_s1_c256",),
        ("dsa_r2_k5_s2_c512_se0.25",),
    )
)
_FBNETV3_B: Stages = decode_stages(
    (
        ("ds_r2_k3_s1_e1_c16",),
        ("ir_r1_k5_s2_e4_c24", "ir_r3_k5_s1_e2_c24"),
        ("ir_r1_k5_s2_e5_c40_se0.25", "ir_r4_k5_s1_e3_c40_se0.25"),
        ("ir_r1_k5_s2_e5_c72", "ir_r4_k3_s1_e3_c72"),
        ("ir_r1_k3_s1_e5_c120_se0.25", "ir_r5_k5_s1_e3_c120_se0.25"),
        ("ir_r1_k3_s2_e6_c184_se0.25", "ir_r5_k5_s1_e4_c184_se0.25", "ir_r1_k5_s1_e6_c224_se0.25"),
        ("cn_r1_k1_s1_c1344",),
    )
)
_FBNETV3_D: Stages = decode_stages(
    (
        ("ds_r2_k3_s1_e1_c16",),
        ("ir_r1_k3_s2_e5_c24", "ir_r5_k3_s1_e2_c24"),
        ("ir_r1_k5_s2_e4_c40_se0.25", "ir_r4_k3_s1_e3_c40_se0.25"),
        ("ir_r1_k3_s2_e5_c72", "ir_r4_k3_s1_e3_c72"),
        ("ir_r1_k3_s1_e5_c128_se0.25", "ir_r6_k5_s1_e3_c128_se0.25"),
        ("ir_r1_k3_s2_e6_c208_se0.25", "ir_r5_k5_s1_e5_c208_se0.25", "ir_r1_k5_s1_e6_c240_se0.25"),
        ("cn_r1_k1_s1_c1440",),
    )
)
_FBNETV3_G: Stages = decode_stages(
    (
        ("ds_r3_k3_s1_e1_c24",),
        ("ir_r1_k5_s2_e4_c40", "ir_r4_k5_s1_e2_c40"),
        ("ir_r1_k5_s2_e4_c56_se0.25", "ir_r4_k5_s1_e3_c56_se0.25"),
        ("ir_r1_k5_s2_e5_c104", "ir_r4_k3_s1_e3_c104"),
        ("ir_r1_k3_s1_e5_c160_se0.25", "ir_r8_k5_s1_e3_c160_se0.25"),
        ("ir_r1_k3_s2_e6_c264_se0.25", "ir_r6_k5_s1_e5_c264_se0.25", "ir_r2_k5_s1_e6_c288_se0.25"),
        ("cn_r1_k1_s1_c1728",),
    )
)


def _mnv3(stages: Stages, multiplier: float, *, tf: bool = False, **extra: object) -> dict[str, object]:
    """A MobileNetV3 Large/Small: the small ones' head is 1024 wide, and below 0.75 the stem keeps its 16."""
    small = stages in (_SMALL, _SMALL_MINIMAL)
    minimal = stages in (_LARGE_MINIMAL, _SMALL_MINIMAL)
    args: dict[str, object] = {
        "stages": stages,
        "channel_multiplier": multiplier,
        "fix_stem": multiplier < 0.75,
        "head_size": 1024 if small else 1280,
        "act_layer": "relu" if minimal else "hard_swish",
    }
    if tf:
        args.update(bn_eps=TF_BN_EPS, same_pad=True)
    return {**args, **extra}


def _lcnet(multiplier: float) -> dict[str, object]:
    # SE width from the block's input rounded to the nearest integer, ReLU inside
    return {"stages": _LCNET, "channel_multiplier": multiplier, "se_round": False}


def _fbnetv3(stages: Stages, stem_size: int) -> dict[str, object]:
    # widths (SE's too) rounded to 8 within 95 %, SE sized from the block input, with the block's activation
    return {
        "stages": stages,
        "stem_size": stem_size,
        "round_limit": 0.95,
        "head_size": 1984,
        "head_bias": False,
        "se_from_exp": False,
        "se_act": None,
    }


ARCHS: dict[str, dict[str, object]] = {
    "mobilenetv3_large_100": _mnv3(MOBILENETV3_LARGE_STAGES, 1.0),
    "mobilenetv3_large_150d": _mnv3(MOBILENETV3_LARGE_STAGES, 1.5, depth_multiplier=1.2),
    "mobilenetv3_small_050": _mnv3(_SMALL, 0.5),
    "mobilenetv3_small_075": _mnv3(_SMALL, 0.75),
    "mobilenetv3_small_100": _mnv3(_SMALL, 1.0),
    "mobilenetv3_rw": {
        "stages": _RW,
        "head_bias": False,
        "se_round": False,
        "se_act": None,
        "bn_eps": TF_BN_EPS,
    },
    "tf_mobilenetv3_large_075": _mnv3(MOBILENETV3_LARGE_STAGES, 0.75, tf=True),
    "tf_mobilenetv3_large_100": _mnv3(MOBILENETV3_LARGE_STAGES, 1.0, tf=True),
    "tf_mobilenetv3_large_minimal_100": _mnv3(_LARGE_MINIMAL, 1.0, tf=True),
    "tf_mobilenetv3_small_075": _mnv3(_SMALL, 0.75, tf=True),
    "tf_mobilenetv3_small_100": _mnv3(_SMALL, 1.0, tf=True),
    "tf_mobilenetv3_small_minimal_100": _mnv3(_SMALL_MINIMAL, 1.0, tf=True),
    "lcnet_050": _lcnet(0.5),
    "lcnet_075": _lcnet(0.75),
    "lcnet_100": _lcnet(1.0),
    "fbnetv3_b": _fbnetv3(_FBNETV3_B, 16),
    "fbnetv3_d": _fbnetv3(_FBNETV3_D, 24),
    "fbnetv3_g": _fbnetv3(_FBNETV3_G, 32),
    **MNV4_ARCHS,
}
