"""The Vision Transformer names and their constructor arguments (the published models' configurations).

Values read off timm 1.0.31 for the same names; img_size is the size the default weights were made at.
"""

from __future__ import annotations

__all__ = ["ARCHS", "vit_args"]

# settings the published families share
# CLIP image towers: a LayerNorm (eps 1e-5) after the position embeddings, no bias in the patch projection
CLIP: dict[str, object] = {"pre_norm": True, "norm_eps": 1e-5}
# global average pooling of the patch tokens without a class token, the final norm before pooling
GAP: dict[str, object] = {"class_token": False, "fc_norm": False, "global_pool": "avg"}
# SigLIP: attention pooling with a learned query, no class token
MAP: dict[str, object] = {"class_token": False, "global_pool": "map"}
# register-token models pooled by average (register tokens are not position-embedded), layer-scaled
REG_GAP: dict[str, object] = {"init_values": 1e-5, "class_token": False, "no_embed_class": True, "global_pool": "avg"}
# DINOv2's layer scale
LAYER_SCALE: dict[str, object] = {"init_values": 1e-5}
# SoViT-150M v2: layer-scaled, no qkv bias, one register token, average-pooled then normalised (fc_norm)
SO150M2: dict[str, object] = {
    "init_values": 1e-5,
    "qkv_bias": False,
    "class_token": False,
    "reg_tokens": 1,
    "global_pool": "avg",
    "mlp_ratio": 34 / 13,
}
# SoViT-400M's MLP width (1152 * 3.7362 = 4304)
SO400M: dict[str, object] = {"mlp_ratio": 3.7362}
# DINOv2 giant's MLP: SiLU-gated, value and gate packed in one fc1
SWIGLU: dict[str, object] = {"act_layer": "silu", "mlp_layer": "glu"}


def vit_args(
    img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, **extra: object
) -> dict[str, object]:
    """A name's VisionTransformer keywords: its image and patch size, width, depth and heads, then the rest."""
    return {
        "img_size": img_size,
        "patch_size": patch_size,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
        **extra,
    }


# model name -> VisionTransformer keywords
ARCHS: dict[str, dict[str, object]] = {
    "vit_tiny_patch16_224": {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small_patch16_224": {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base_patch16_224": {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
    # plain ViTs at other patch sizes and resolutions, and the small test models
    "vit_tiny_patch16_384": vit_args(384, 16, 192, 12, 3),
    "vit_small_patch32_224": vit_args(224, 32, 384, 12, 6),
    "vit_small_patch32_384": vit_args(384, 32, 384, 12, 6),
    "vit_small_patch16_384": vit_args(384, 16, 384, 12, 6),
    "vit_small_patch8_224": vit_args(224, 8, 384, 12, 6),
    "vit_base_patch32_224": vit_args(224, 32, 768, 12, 12),
    "vit_base_patch32_384": vit_args(384, 32, 768, 12, 12),
    "vit_base_patch16_384": vit_args(384, 16, 768, 12, 12),
    "vit_base_patch8_224": vit_args(224, 8, 768, 12, 12),
    "vit_large_patch32_224": vit_args(224, 32, 1024, 24, 16),
    "vit_large_patch32_384": vit_args(384, 32, 1024, 24, 16),
    "vit_large_patch16_224": vit_args(224, 16, 1024, 24, 16),
    "vit_large_patch16_384": vit_args(384, 16, 1024, 24, 16),
    "vit_huge_patch14_224": vit_args(224, 14, 1280, 32, 16),
    "vit_base_patch16_224_miil": vit_args(224, 16, 768, 12, 12, qkv_bias=False),
    "test_vit": vit_args(160, 16, 64, 6, 2, mlp_ratio=3.0, dynamic_img_size=True),
    "test_vit2": vit_args(
        160,
        16,
        64,
        8,
        2,
        **LAYER_SCALE,
        mlp_ratio=3.0,
        class_token=False,
        reg_tokens=1,
        global_pool="avg",
        dynamic_img_size=True,
    ),
    "test_vit3": vit_args(
        160, 16, 96, 9, 3, **MAP, **LAYER_SCALE, mlp_ratio=2.0, reg_tokens=1, pool_include_prefix=True
    ),
    # CLIP image towers
    "vit_base_patch16_clip_224": vit_args(224, 16, 768, 12, 12, **CLIP),
    "vit_base_patch16_clip_384": vit_args(384, 16, 768, 12, 12, **CLIP),
    "vit_base_patch16_clip_quickgelu_224": vit_args(224, 16, 768, 12, 12, **CLIP, act_layer="quick_gelu"),
    "vit_base_patch16_plus_clip_240": vit_args(240, 16, 896, 12, 14, **CLIP),
    "vit_base_patch32_clip_224": vit_args(224, 32, 768, 12, 12, **CLIP),
    "vit_base_patch32_clip_256": vit_args(256, 32, 768, 12, 12, **CLIP),
    "vit_base_patch32_clip_384": vit_args(384, 32, 768, 12, 12, **CLIP),
    "vit_base_patch32_clip_448": vit_args(448, 32, 768, 12, 12, **CLIP),
    "vit_base_patch32_clip_quickgelu_224": vit_args(224, 32, 768, 12, 12, **CLIP, act_layer="quick_gelu"),
    "vit_betwixt_patch32_clip_224": vit_args(224, 32, 640, 12, 10, **CLIP),
    "vit_giant_patch14_clip_224": vit_args(224, 14, 1408, 40, 16, **CLIP, mlp_ratio=4.363636363636363),
    "vit_gigantic_patch14_clip_224": vit_args(224, 14, 1664, 48, 16, **CLIP, mlp_ratio=4.923076923076923),
    "vit_gigantic_patch14_clip_378": vit_args(378, 14, 1664, 48, 16, **CLIP, mlp_ratio=4.923076923076923),
    "vit_gigantic_patch14_clip_quickgelu_224": vit_args(
        224, 14, 1664, 48, 16, **CLIP, mlp_ratio=4.923076923076923, act_layer="quick_gelu"
    ),
    "vit_huge_patch14_clip_224": vit_args(224, 14, 1280, 32, 16, **CLIP),
    "vit_huge_patch14_clip_336": vit_args(336, 14, 1280, 32, 16, **CLIP),
    "vit_huge_patch14_clip_378": vit_args(378, 14, 1280, 32, 16, **CLIP),
    "vit_huge_patch14_clip_quickgelu_224": vit_args(224, 14, 1280, 32, 16, **CLIP, act_layer="quick_gelu"),
    "vit_huge_patch14_clip_quickgelu_378": vit_args(378, 14, 1280, 32, 16, **CLIP, act_layer="quick_gelu"),
    "vit_large_patch14_clip_224": vit_args(224, 14, 1024, 24, 16, **CLIP),
    "vit_large_patch14_clip_336": vit_args(336, 14, 1024, 24, 16, **CLIP),
    "vit_large_patch14_clip_quickgelu_224": vit_args(224, 14, 1024, 24, 16, **CLIP, act_layer="quick_gelu"),
    "vit_large_patch14_clip_quickgelu_336": vit_args(336, 14, 1024, 24, 16, **CLIP, act_layer="quick_gelu"),
    "vit_medium_patch16_clip_224": vit_args(224, 16, 512, 12, 8, **CLIP),
    "vit_medium_patch32_clip_224": vit_args(224, 32, 512, 12, 8, **CLIP),
    "vit_xsmall_patch16_clip_224": vit_args(224, 16, 256, 10, 4, **CLIP),
    # DINOv2, with and without register tokens
    "vit_base_patch14_dinov2": vit_args(518, 14, 768, 12, 12, **LAYER_SCALE),
    "vit_base_patch14_reg4_dinov2": vit_args(518, 14, 768, 12, 12, **LAYER_SCALE, reg_tokens=4, no_embed_class=True),
    "vit_giant_patch14_dinov2": vit_args(518, 14, 1536, 40, 24, **LAYER_SCALE, **SWIGLU, mlp_ratio=5.33334),
    "vit_giant_patch14_reg4_dinov2": vit_args(
        518, 14, 1536, 40, 24, **LAYER_SCALE, **SWIGLU, mlp_ratio=5.33334, reg_tokens=4, no_embed_class=True
    ),
    "vit_large_patch14_dinov2": vit_args(518, 14, 1024, 24, 16, **LAYER_SCALE),
    "vit_large_patch14_reg4_dinov2": vit_args(518, 14, 1024, 24, 16, **LAYER_SCALE, reg_tokens=4, no_embed_class=True),
    "vit_small_patch14_dinov2": vit_args(518, 14, 384, 12, 6, **LAYER_SCALE),
    "vit_small_patch14_reg4_dinov2": vit_args(518, 14, 384, 12, 6, **LAYER_SCALE, reg_tokens=4, no_embed_class=True),
    # GAP models: average-pooled patch tokens, no class token, the final norm before pooling
    "vit_medium_patch16_gap_240": vit_args(240, 16, 512, 12, 8, **GAP, qkv_bias=False, init_values=1e-6),
    "vit_medium_patch16_gap_256": vit_args(256, 16, 512, 12, 8, **GAP, qkv_bias=False, init_values=1e-6),
    "vit_medium_patch16_gap_384": vit_args(384, 16, 512, 12, 8, **GAP, qkv_bias=False, init_values=1e-6),
    "vit_huge_patch14_gap_224": vit_args(224, 14, 1280, 32, 16, **GAP),
    "vit_huge_patch16_gap_448": vit_args(448, 16, 1280, 32, 16, **GAP),
    "vit_giant_patch16_gap_224": vit_args(224, 16, 1408, 40, 16, **GAP, mlp_ratio=48 / 11),
    # register-token GAP models (timm's "sbb" recipes)
    "vit_wee_patch16_reg1_gap_256": vit_args(256, 16, 256, 14, 4, **REG_GAP, mlp_ratio=5.0, reg_tokens=1),
    "vit_little_patch16_reg1_gap_256": vit_args(256, 16, 320, 14, 5, **REG_GAP, mlp_ratio=5.6, reg_tokens=1),
    "vit_little_patch16_reg4_gap_256": vit_args(256, 16, 320, 14, 5, **REG_GAP, mlp_ratio=5.6, reg_tokens=4),
    # ... with differential attention ('d'), parallel blocks ('p'), or both
    "vit_dwee_patch16_reg1_gap_256": vit_args(
        256, 16, 256, 14, 4, **REG_GAP, mlp_ratio=5.0, reg_tokens=1, attn_layer="diff"
    ),
    "vit_pwee_patch16_reg1_gap_256": vit_args(
        256, 16, 256, 16, 4, **REG_GAP, mlp_ratio=5.0, reg_tokens=1, block_fn="parallel"
    ),
    "vit_dpwee_patch16_reg1_gap_256": vit_args(
        256, 16, 256, 16, 4, **REG_GAP, mlp_ratio=5.0, reg_tokens=1, block_fn="diff_parallel"
    ),
    "vit_dlittle_patch16_reg1_gap_256": vit_args(
        256, 16, 320, 14, 5, **REG_GAP, mlp_ratio=5.6, reg_tokens=1, attn_layer="diff"
    ),
    "vit_medium_patch16_reg1_gap_256": vit_args(256, 16, 512, 12, 8, **REG_GAP, reg_tokens=1),
    "vit_medium_patch16_reg4_gap_256": vit_args(256, 16, 512, 12, 8, **REG_GAP, reg_tokens=4),
    "vit_mediumd_patch16_reg4_gap_256": vit_args(256, 16, 512, 20, 8, **REG_GAP, reg_tokens=4),
    "vit_mediumd_patch16_reg4_gap_384": vit_args(384, 16, 512, 20, 8, **REG_GAP, reg_tokens=4),
    "vit_betwixt_patch16_reg1_gap_256": vit_args(256, 16, 640, 12, 10, **REG_GAP, reg_tokens=1),
    "vit_betwixt_patch16_reg4_gap_256": vit_args(256, 16, 640, 12, 10, **REG_GAP, reg_tokens=4),
    "vit_betwixt_patch16_reg4_gap_384": vit_args(384, 16, 640, 12, 10, **REG_GAP, reg_tokens=4),
    # SoViT-150M: register tokens position-embedded, pooled as the GAP models
    "vit_so150m_patch16_reg4_gap_256": vit_args(256, 16, 896, 18, 14, **GAP, mlp_ratio=2.572, reg_tokens=4),
    "vit_so150m_patch16_reg4_gap_384": vit_args(384, 16, 896, 18, 14, **GAP, mlp_ratio=2.572, reg_tokens=4),
    "vit_so150m2_patch16_reg1_gap_256": vit_args(256, 16, 832, 21, 13, **SO150M2),
    "vit_so150m2_patch16_reg1_gap_384": vit_args(384, 16, 832, 21, 13, **SO150M2),
    "vit_so150m2_patch16_reg1_gap_448": vit_args(448, 16, 832, 21, 13, **SO150M2),
    # SigLIP image towers: attention-pooled ('map'), and their GAP variants
    "vit_base_patch16_siglip_224": vit_args(224, 16, 768, 12, 12, **MAP),
    "vit_base_patch16_siglip_256": vit_args(256, 16, 768, 12, 12, **MAP),
    "vit_base_patch16_siglip_384": vit_args(384, 16, 768, 12, 12, **MAP),
    "vit_base_patch16_siglip_512": vit_args(512, 16, 768, 12, 12, **MAP),
    "vit_base_patch32_siglip_256": vit_args(256, 32, 768, 12, 12, **MAP, act_layer="gelu_tanh"),
    "vit_large_patch16_siglip_256": vit_args(256, 16, 1024, 24, 16, **MAP),
    "vit_large_patch16_siglip_384": vit_args(384, 16, 1024, 24, 16, **MAP),
    "vit_large_patch16_siglip_512": vit_args(512, 16, 1024, 24, 16, **MAP, act_layer="gelu_tanh"),
    "vit_so400m_patch14_siglip_224": vit_args(224, 14, 1152, 27, 16, **MAP, **SO400M),
    "vit_so400m_patch14_siglip_378": vit_args(378, 14, 1152, 27, 16, **MAP, **SO400M),
    "vit_so400m_patch14_siglip_384": vit_args(384, 14, 1152, 27, 16, **MAP, **SO400M),
    "vit_so400m_patch16_siglip_256": vit_args(256, 16, 1152, 27, 16, **MAP, **SO400M, act_layer="gelu_tanh"),
    "vit_so400m_patch16_siglip_384": vit_args(384, 16, 1152, 27, 16, **MAP, **SO400M, act_layer="gelu_tanh"),
    "vit_so400m_patch16_siglip_512": vit_args(512, 16, 1152, 27, 16, **MAP, **SO400M, act_layer="gelu_tanh"),
    "vit_giantopt_patch16_siglip_256": vit_args(256, 16, 1536, 40, 16, **MAP, act_layer="gelu_tanh"),
    "vit_giantopt_patch16_siglip_384": vit_args(384, 16, 1536, 40, 16, **MAP, act_layer="gelu_tanh"),
    "vit_base_patch16_siglip_gap_224": vit_args(224, 16, 768, 12, 12, **GAP),
    "vit_base_patch16_siglip_gap_256": vit_args(256, 16, 768, 12, 12, **GAP),
    "vit_base_patch16_siglip_gap_384": vit_args(384, 16, 768, 12, 12, **GAP),
    "vit_base_patch16_siglip_gap_512": vit_args(512, 16, 768, 12, 12, **GAP),
    "vit_base_patch32_siglip_gap_256": vit_args(256, 32, 768, 12, 12, **GAP, act_layer="gelu_tanh"),
    "vit_large_patch16_siglip_gap_256": vit_args(256, 16, 1024, 24, 16, **GAP),
    "vit_large_patch16_siglip_gap_384": vit_args(384, 16, 1024, 24, 16, **GAP),
    "vit_large_patch16_siglip_gap_512": vit_args(512, 16, 1024, 24, 16, **GAP, act_layer="gelu_tanh"),
    "vit_so400m_patch14_siglip_gap_224": vit_args(224, 14, 1152, 27, 16, **GAP, **SO400M),
    "vit_so400m_patch14_siglip_gap_378": vit_args(378, 14, 1152, 27, 16, **GAP, **SO400M),
    "vit_so400m_patch14_siglip_gap_384": vit_args(384, 14, 1152, 27, 16, **GAP, **SO400M),
    "vit_so400m_patch14_siglip_gap_448": vit_args(448, 14, 1152, 27, 16, **GAP, **SO400M),
    "vit_so400m_patch14_siglip_gap_896": vit_args(896, 14, 1152, 27, 16, **GAP, **SO400M),
    "vit_so400m_patch16_siglip_gap_256": vit_args(256, 16, 1152, 27, 16, **GAP, **SO400M, act_layer="gelu_tanh"),
    "vit_so400m_patch16_siglip_gap_384": vit_args(384, 16, 1152, 27, 16, **GAP, **SO400M, act_layer="gelu_tanh"),
    "vit_so400m_patch16_siglip_gap_512": vit_args(512, 16, 1152, 27, 16, **GAP, **SO400M, act_layer="gelu_tanh"),
    "vit_giantopt_patch16_siglip_gap_256": vit_args(256, 16, 1536, 40, 16, **GAP, act_layer="gelu_tanh"),
    "vit_giantopt_patch16_siglip_gap_384": vit_args(384, 16, 1536, 40, 16, **GAP, act_layer="gelu_tanh"),
}
