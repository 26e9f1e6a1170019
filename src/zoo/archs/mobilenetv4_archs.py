"""MobileNetV4's architectures (Qin et al., 2024): each name's block stages and arguments.

The definitions are the published ones, as timm 1.0.31 writes them: universal inverted residuals ('uir':
ExtraDW, IR, ConvNeXt-like and FFN forms), a fused first stage ('er') in the medium and large models, and
a head conv followed by a batch norm; the hybrids add mobile multi-query attention ('mqa').
"""

from __future__ import annotations

from zoo.archs.layers.block_string import decode_stages
from zoo.archs.layers.mbconv import BlockDef

__all__ = ["MNV4_ARCHS"]

Stages = tuple[tuple[BlockDef, ...], ...]

_CONV_SMALL: Stages = decode_stages(
    (
        ("cn_r1_k3_s2_e1_c32", "cn_r1_k1_s1_e1_c32"),
        ("cn_r1_k3_s2_e1_c96", "cn_r1_k1_s1_e1_c64"),
        ("uir_r1_a5_k5_s2_e3_c96", "uir_r4_a0_k3_s1_e2_c96", "uir_r1_a3_k0_s1_e4_c96"),
        (
            "uir_r1_a3_k3_s2_e6_c128",
            "uir_r1_a5_k5_s1_e4_c128",
            "uir_r1_a0_k5_s1_e4_c128",
            "uir_r1_a0_k5_s1_e3_c128",
            "uir_r2_a0_k3_s1_e4_c128",
        ),
        ("cn_r1_k1_s1_c960",),
    )
)
_CONV_MEDIUM: Stages = decode_stages(
    (
        ("er_r1_k3_s2_e4_c48",),
        ("uir_r1_a3_k5_s2_e4_c80", "uir_r1_a3_k3_s1_e2_c80"),
        (
            "uir_r1_a3_k5_s2_e6_c160",
            "uir_r2_a3_k3_s1_e4_c160",
            "uir_r1_a3_k5_s1_e4_c160",
            "uir_r1_a3_k3_s1_e4_c160",
            "uir_r1_a3_k0_s1_e4_c160",
            "uir_r1_a0_k0_s1_e2_c160",
            "uir_r1_a3_k0_s1_e4_c160",
        ),
        (
            "uir_r1_a5_k5_s2_e6_c256",
            "uir_r1_a5_k5_s1_e4_c256",
            "uir_r2_a3_k5_s1_e4_c256",
            "uir_r1_a0_k0_s1_e4_c256",
            "uir_r1_a3_k0_s1_e4_c256",
            "uir_r1_a3_k5_s1_e2_c256",
            "uir_r1_a5_k5_s1_e4_c256",
            "uir_r2_a0_k0_s1_e4_c256",
            "uir_r1_a5_k0_s1_e2_c256",
        ),
        ("cn_r1_k1_s1_c960",),
    )
)
_CONV_LARGE: Stages = decode_stages(
    (
        ("er_r1_k3_s2_e4_c48",),
        ("uir_r1_a3_k5_s2_e4_c96", "uir_r1_a3_k3_s1_e4_c96"),
        (
            "uir_r1_a3_k5_s2_e4_c192",
            "uir_r3_a3_k3_s1_e4_c192",
            "uir_r1_a3_k5_s1_e4_c192",
            "uir_r5_a5_k3_s1_e4_c192",
            "uir_r1_a3_k0_s1_e4_c192",
        ),
        (
            "uir_r4_a5_k5_s2_e4_c512",
            "uir_r1_a5_k0_s1_e4_c512",
            "uir_r1_a5_k3_s1_e4_c512",
            "uir_r2_a5_k0_s1_e4_c512",
            "uir_r1_a5_k3_s1_e4_c512",
            "uir_r1_a5_k5_s1_e4_c512",
            "uir_r3_a5_k0_s1_e4_c512",
        ),
        ("cn_r1_k1_s1_c960",),
    )
)


# the hybrids: the conv models' stages with multi-query attention ('mqa') interleaved in the last two
_MQA_KV = "mqa_r1_k3_h4_s1_v2_d64_c160"  # keys and values from a map downsampled 2x
_MQA = "mqa_r1_k3_h4_s1_d64_c256"
_HYBRID_MEDIUM: Stages = decode_stages(
    (
        ("er_r1_k3_s2_e4_c48",),
        ("uir_r1_a3_k5_s2_e4_c80", "uir_r1_a3_k3_s1_e2_c80"),
        (
            "uir_r1_a3_k5_s2_e6_c160",
            "uir_r1_a0_k0_s1_e2_c160",
            "uir_r1_a3_k3_s1_e4_c160",
            "uir_r1_a3_k5_s1_e4_c160",
            _MQA_KV,
            "uir_r1_a3_k3_s1_e4_c160",
            _MQA_KV,
            "uir_r1_a3_k0_s1_e4_c160",
            _MQA_KV,
            "uir_r1_a3_k3_s1_e4_c160",
            _MQA_KV,
            "uir_r1_a3_k0_s1_e4_c160",
        ),
        (
            "uir_r1_a5_k5_s2_e6_c256",
            "uir_r1_a5_k5_s1_e4_c256",
            "uir_r2_a3_k5_s1_e4_c256",
            "uir_r1_a0_k0_s1_e2_c256",
            "uir_r1_a3_k5_s1_e2_c256",
            "uir_r1_a0_k0_s1_e2_c256",
            "uir_r1_a0_k0_s1_e4_c256",
            _MQA,
            "uir_r1_a3_k0_s1_e4_c256",
            _MQA,
            "uir_r1_a5_k5_s1_e4_c256",
            _MQA,
            "uir_r1_a5_k0_s1_e4_c256",
            _MQA,
            "uir_r1_a5_k0_s1_e4_c256",
        ),
        ("cn_r1_k1_s1_c960",),
    )
)
_MQA_KV_L = "mqa_r1_k3_h8_s1_v2_d48_c192"
_MQA_L = "mqa_r1_k3_h8_s1_d64_c512"
_HYBRID_LARGE: Stages = decode_stages(
    (
        ("er_r1_k3_s2_e4_c48",),
        ("uir_r1_a3_k5_s2_e4_c96", "uir_r1_a3_k3_s1_e4_c96"),
        (
            "uir_r1_a3_k5_s2_e4_c192",
            "uir_r3_a3_k3_s1_e4_c192",
            "uir_r1_a3_k5_s1_e4_c192",
            "uir_r2_a5_k3_s1_e4_c192",
            _MQA_KV_L,
            "uir_r1_a5_k3_s1_e4_c192",
            _MQA_KV_L,
            "uir_r1_a5_k3_s1_e4_c192",
            _MQA_KV_L,
            "uir_r1_a5_k3_s1_e4_c192",
            _MQA_KV_L,
            "uir_r1_a3_k0_s1_e4_c192",
        ),
        (
            "uir_r4_a5_k5_s2_e4_c512",
            "uir_r1_a5_k0_s1_e4_c512",
            "uir_r1_a5_k3_s1_e4_c512",
            "uir_r2_a5_k0_s1_e4_c512",
            "uir_r1_a5_k3_s1_e4_c512",
            "uir_r1_a5_k5_s1_e4_c512",
            _MQA_L,
            "uir_r1_a5_k0_s1_e4_c512",
            _MQA_L,
            "uir_r1_a5_k0_s1_e4_c512",
            _MQA_L,
            "uir_r1_a5_k0_s1_e4_c512",
            _MQA_L,
            "uir_r1_a5_k0_s1_e4_c512",
        ),
        ("cn_r1_k1_s1_c960",),
    )
)


def _mnv4(stages: Stages, stem_size: int, multiplier: float = 1.0, **extra: object) -> dict[str, object]:
    """A MobileNetV4: ReLU (unless given), no SE, a bias-free head conv with a norm; narrower ones keep their stem."""
    return {
        "stages": stages,
        "stem_size": stem_size,
        "channel_multiplier": multiplier,
        "fix_stem": multiplier < 1.0,
        "act_layer": "relu",
        "head_norm": True,
        **extra,
    }


MNV4_ARCHS: dict[str, dict[str, object]] = {
    "mobilenetv4_conv_small": _mnv4(_CONV_SMALL, 32),
    "mobilenetv4_conv_small_050": _mnv4(_CONV_SMALL, 32, 0.5),
    "mobilenetv4_conv_medium": _mnv4(_CONV_MEDIUM, 32),
    "mobilenetv4_conv_large": _mnv4(_CONV_LARGE, 24),
    # anti-aliased striding: average pooling rounding down ('aa'), a zero-padded binomial blur ('blur')
    "mobilenetv4_conv_aa_large": _mnv4(_CONV_LARGE, 24, aa_layer="avg_floor"),
    "mobilenetv4_conv_blur_medium": _mnv4(_CONV_MEDIUM, 32, aa_layer="blurpc"),
    # the hybrids: the residual blocks (not the fused first one) scale their branch, starting at 1e-5
    "mobilenetv4_hybrid_medium": _mnv4(_HYBRID_MEDIUM, 32, layer_scale_init_value=1e-5),
    "mobilenetv4_hybrid_large": _mnv4(_HYBRID_LARGE, 24, layer_scale_init_value=1e-5, act_layer="gelu"),
}
