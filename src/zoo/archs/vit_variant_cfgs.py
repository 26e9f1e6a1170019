"""The Vision Transformer variants' names and their constructor arguments: AIMv2, FlexiViT, TIPSv2, EVA, InternViT,
the residual post-norm ViT, C-RADIO and BEiT-3 (their cfgs live in cfgs/vit.json with the rest of the family).

Values read off timm 1.0.31 for the same names; img_size is the size the default weights were made at.
"""

from __future__ import annotations

from zoo.archs.vit_cfgs import vit_args

__all__ = ["VARIANT_ARCHS"]


# AIMv2: RMS norms (eps 1e-5, the patch embedding normed too), a SwiGLU MLP, no biases but the patch
# projection's, no class token, average pooling after the final norm
AIMV2: dict[str, object] = {
    "class_token": False,
    "fc_norm": False,
    "global_pool": "avg",
    "qkv_bias": False,
    "proj_bias": False,
    "act_layer": "silu",
    "mlp_layer": "swiglu",
    "norm_layer": "rmsnorm",
    "embed_norm": True,
    "norm_eps": 1e-5,
}
# FlexiViT: a class token without a position embedding of its own
FLEXI: dict[str, object] = {"no_embed_class": True}
# TIPSv2: DINOv2-style, one register token, layer scale starting at 1
TIPS: dict[str, object] = {"init_values": 1.0, "reg_tokens": 1, "no_embed_class": True}
# C-RADIO: register tokens not position-embedded, no final norm
RADIO: dict[str, object] = {"no_embed_class": True, "final_norm": False}
# BEiT-3: LayerNorms of eps 1e-5, one more inside the attention and the MLP, average pooling
BEIT3: dict[str, object] = {"norm_eps": 1e-5, "scale_attn_norm": True, "scale_mlp_norm": True, "global_pool": "avg"}
# average pooling of the patch tokens, normalised after pooling (fc_norm)
GAP_AVG: dict[str, object] = {"global_pool": "avg"}
SO400M_MLP = 4304 / 1152
# DINOv2-giant's packed SwiGLU: 4096 hidden after its 2/3 reduction, so fc1 is 8192 wide
GIANT_GLU: dict[str, object] = {"mlp_ratio": 2.66667 * 2, "mlp_layer": "glu", "act_layer": "silu"}


def _aimv2(img_size: int, embed_dim: int, num_heads: int, mlp_ratio: float) -> dict[str, object]:
    return vit_args(img_size, 14, embed_dim, 24, num_heads, mlp_ratio=mlp_ratio, **AIMV2)


# model name -> VisionTransformer keywords
VARIANT_ARCHS: dict[str, dict[str, object]] = {
    **{f"aimv2_large_patch14_{s}": _aimv2(s, 1024, 8, 2.75) for s in (224, 336, 448)},
    **{f"aimv2_huge_patch14_{s}": _aimv2(s, 1536, 12, 2.6667) for s in (224, 336, 448)},
    **{f"aimv2_1b_patch14_{s}": _aimv2(s, 2048, 16, 2.75) for s in (224, 336, 448)},
    **{f"aimv2_3b_patch14_{s}": _aimv2(s, 3072, 24, 2.6667) for s in (224, 336, 448)},
    "flexivit_small": vit_args(240, 16, 384, 12, 6, **FLEXI),
    "flexivit_base": vit_args(240, 16, 768, 12, 12, **FLEXI),
    "flexivit_large": vit_args(240, 16, 1024, 24, 16, **FLEXI),
    "vit_base_patch14_reg1_tipsv2": vit_args(448, 14, 768, 12, 12, **TIPS),
    "vit_large_patch14_reg1_tipsv2": vit_args(448, 14, 1024, 24, 16, **TIPS),
    "vit_giant_patch14_reg1_tipsv2": vit_args(448, 14, 1536, 40, 24, **TIPS, **GIANT_GLU),
    "vit_so400m_patch14_reg1_tipsv2": vit_args(448, 14, 1152, 27, 16, **TIPS, mlp_ratio=SO400M_MLP),
    "eva_large_patch14_196": vit_args(196, 14, 1024, 24, 16, **GAP_AVG),
    "eva_large_patch14_336": vit_args(336, 14, 1024, 24, 16, **GAP_AVG),
    "vit_intern300m_patch14_448": vit_args(
        448, 14, 1024, 24, 16, init_values=0.1, final_norm=False, dynamic_img_size=True
    ),
    "vit_base_patch16_rpn_224": vit_args(
        224, 16, 768, 12, 12, qkv_bias=False, init_values=1e-5, class_token=False, block_fn="res_post", **GAP_AVG
    ),
    "vit_base_patch16_radio_v3": vit_args(512, 16, 768, 12, 12, **RADIO, init_values=1e-5, reg_tokens=7),
    "vit_large_patch16_radio_v3": vit_args(512, 16, 1024, 24, 16, **RADIO, init_values=1e-5, reg_tokens=7),
    "vit_huge_patch16_radio_v3": vit_args(512, 16, 1280, 32, 16, **RADIO, reg_tokens=7),
    "vit_giant_patch16_radio_v3": vit_args(512, 16, 1536, 40, 24, **RADIO, reg_tokens=7),
    "vit_huge_patch16_radio_v4": vit_args(512, 16, 1280, 32, 16, **RADIO, reg_tokens=9),
    "vit_so400m_patch16_radio_v4": vit_args(512, 16, 1152, 27, 16, **RADIO, mlp_ratio=SO400M_MLP, reg_tokens=9),
    "beit3_base_patch16_224": vit_args(224, 16, 768, 12, 12, **BEIT3),
    "beit3_large_patch16_224": vit_args(224, 16, 1024, 24, 16, **BEIT3),
}
