"""Regenerate src/zoo/archs/cfgs/<family>.json from the reference facts in shared/reference.

Usage: python tools/sync_cfgs.py [REFERENCE_DIR]

The names are each cfg file's own keys (the catalogue reads them from there): to add a model, add its
name to its family's file with an empty list of cfgs (and its arguments to the family module), then run this.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from zoo.archs.catalogue import FAMILIES  # noqa: E402

# The reference lists tags alphabetically; these are the tags timm 1.0.31 resolves a bare name to
# where that is not the first listed (a fact read off timm by hand). The default goes first.
DEFAULT_TAGS = {
    "convnext_base": "fb_in22k_ft_in1k",
    "convnext_large": "fb_in22k_ft_in1k",
    "convnext_large_mlp": "clip_laion2b_soup_ft_in12k_in1k_320",
    "convnext_nano": "in12k_ft_in1k",
    "convnext_small": "in12k_ft_in1k",
    "convnext_tiny": "in12k_ft_in1k",
    "convnext_xlarge": "fb_in22k_ft_in1k",
    "convnext_xxlarge": "clip_laion2b_soup_ft_in1k",
    "convnextv2_atto": "fcmae_ft_in1k",
    "convnextv2_base": "fcmae_ft_in22k_in1k",
    "convnextv2_femto": "fcmae_ft_in1k",
    "convnextv2_huge": "fcmae_ft_in22k_in1k_384",
    "convnextv2_large": "fcmae_ft_in22k_in1k",
    "convnextv2_nano": "fcmae_ft_in22k_in1k",
    "convnextv2_pico": "fcmae_ft_in1k",
    "convnextv2_tiny": "fcmae_ft_in22k_in1k",
    "ecaresnet50t": "ra2_in1k",
    "efficientnet_b0": "ra_in1k",
    "efficientnet_b1": "ra4_e3600_r240_in1k",
    "efficientnet_b5": "sw_in12k_ft_in1k",
    "eva_large_patch14_196": "in22k_ft_in22k_in1k",
    "eva_large_patch14_336": "in22k_ft_in22k_in1k",
    "flexivit_base": "1200ep_in1k",
    "flexivit_large": "1200ep_in1k",
    "flexivit_small": "1200ep_in1k",
    "mobilenetv3_large_100": "ra_in1k",
    "mobilenetv4_conv_aa_large": "e230_r448_in12k_ft_in1k",
    "mobilenetv4_conv_large": "e600_r384_in1k",
    "mobilenetv4_conv_medium": "e500_r256_in1k",
    "mobilenetv4_conv_small": "e2400_r224_in1k",
    "mobilenetv4_hybrid_large": "ix_e600_r384_in1k",
    "mobilenetv4_hybrid_medium": "e200_r256_in12k_ft_in1k",
    "regnetx_008": "tv2_in1k",
    "regnetx_016": "tv2_in1k",
    "regnetx_032": "tv2_in1k",
    "regnetx_080": "tv2_in1k",
    "regnetx_160": "tv2_in1k",
    "regnetx_320": "tv2_in1k",
    "regnety_004": "tv2_in1k",
    "regnety_016": "tv2_in1k",
    "regnety_032": "ra_in1k",
    "regnety_040": "ra3_in1k",
    "regnety_064": "ra3_in1k",
    "regnety_080": "ra3_in1k",
    "regnety_120": "sw_in12k_ft_in1k",
    "regnety_1280": "swag_ft_in1k",
    "regnety_160": "sw_in12k_ft_in1k",
    "regnety_320": "tv2_in1k",
    "regnety_640": "seer_ft_in1k",
    "resnet101": "a1h_in1k",
    "resnet101d": "ra2_in1k",
    "resnet152": "a1h_in1k",
    "resnet152d": "ra2_in1k",
    "resnet50d": "ra2_in1k",
    "resnetaa101d": "sw_in12k_ft_in1k",
    "resnetaa50d": "sw_in12k_ft_in1k",
    "resnext101_32x16d": "fb_wsl_ig1b_ft_in1k",
    "resnext101_32x8d": "tv_in1k",
    "resnext50_32x4d": "a1h_in1k",
    "seresnext50_32x4d": "racm_in1k",
    "seresnextaa101d_32x8d": "sw_in12k_ft_in1k_288",
    "seresnextaa201d_32x8d": "sw_in12k_ft_in1k_384",
    "tf_efficientnet_b0": "ns_jft_in1k",
    "tf_efficientnet_b1": "ns_jft_in1k",
    "tf_efficientnet_b2": "ns_jft_in1k",
    "tf_efficientnet_b3": "ns_jft_in1k",
    "tf_efficientnet_b4": "ns_jft_in1k",
    "tf_efficientnet_b5": "ns_jft_in1k",
    "tf_efficientnet_b6": "ns_jft_in1k",
    "tf_efficientnet_b7": "ns_jft_in1k",
    "tf_efficientnet_l2": "ns_jft_in1k_475",
    "tf_efficientnetv2_b3": "in21k_ft_in1k",
    "tf_efficientnetv2_l": "in21k_ft_in1k",
    "tf_efficientnetv2_m": "in21k_ft_in1k",
    "tf_efficientnetv2_s": "in21k_ft_in1k",
    "tf_efficientnetv2_xl": "in21k_ft_in1k",
    "vit_base_patch16_384": "augreg_in21k_ft_in1k",
    "vit_base_patch16_clip_224": "laion2b_ft_in12k_in1k",
    "vit_base_patch16_clip_384": "laion2b_ft_in12k_in1k",
    "vit_base_patch32_224": "augreg_in21k_ft_in1k",
    "vit_base_patch32_384": "augreg_in21k_ft_in1k",
    "vit_base_patch32_clip_224": "laion2b_ft_in12k_in1k",
    "vit_betwixt_patch16_reg4_gap_256": "sbb2_e200_in12k_ft_in1k",
    "vit_dpwee_patch16_reg1_gap_256": "sbb_nadamuon_in1k",
    "vit_dwee_patch16_reg1_gap_256": "sbb_nadamuon_in1k",
    "vit_huge_patch14_224": "orig_in21k",
    "vit_huge_patch14_clip_224": "laion2b_ft_in12k_in1k",
    "vit_intern300m_patch14_448": "ogvl_dist",
    "vit_large_patch14_clip_224": "laion2b_ft_in12k_in1k",
    "vit_large_patch14_clip_336": "laion2b_ft_in12k_in1k",
    "vit_large_patch16_224": "augreg_in21k_ft_in1k",
    "vit_little_patch16_reg1_gap_256": "sbb_in12k_ft_in1k",
    "vit_medium_patch16_reg4_gap_256": "sbb_in12k_ft_in1k",
    "vit_mediumd_patch16_reg4_gap_256": "sbb2_e200_in12k_ft_in1k",
    "vit_small_patch16_224": "augreg_in21k_ft_in1k",
    "vit_small_patch16_384": "augreg_in21k_ft_in1k",
    "vit_small_patch32_224": "augreg_in21k_ft_in1k",
    "vit_so150m2_patch16_reg1_gap_256": "sbb_e200_in12k_ft_in1k",
    "vit_so150m_patch16_reg4_gap_256": "sbb_e250_in12k_ft_in1k",
    "vit_so400m_patch14_siglip_gap_224": "v2_webli",
    "vit_so400m_patch14_siglip_gap_448": "pali_mix",
    "vit_so400m_patch14_siglip_gap_896": "pali_pt",
    "vit_tiny_patch16_224": "augreg_in21k_ft_in1k",
    "wide_resnet101_2": "tv_in1k",
}

# torch.hub's release naming, `name-<first hex digits of the sha256>.ext`: the published weights
# behind such urls are checked against that prefix (DefaultCfg.check_hash)
_HUB_NAME_RE = re.compile(r"-[0-9a-f]{8,64}\.[A-Za-z0-9]+$")


def with_check_hash(cfg: dict[str, object]) -> dict[str, object]:
    """cfg with check_hash set: true where its url's file name has the torch.hub form."""
    url = cfg.get("url")
    name = url.rsplit("/", 1)[-1] if isinstance(url, str) else ""
    return {**cfg, "check_hash": bool(_HUB_NAME_RE.search(name))}


def main(argv: list[str]) -> int:
    ref = Path(argv[0]) if argv else ROOT.parent / "shared" / "reference" / "timm-1.0.31"
    out_dir = ROOT / "src" / "zoo" / "archs" / "cfgs"
    out_dir.mkdir(parents=True, exist_ok=True)
    for module, names in FAMILIES.items():
        family = module.rsplit(".", 1)[-1]
        data: dict[str, list[dict[str, object]]] = {}
        for name in names:
            # names later versions dropped (densenet121d, densenet264) have their facts in timm-0.4.12
            path = ref / f"{name}.json"
            if not path.is_file():
                path = ref.parent / "timm-0.4.12" / f"{name}.json"
            facts = json.loads(path.read_text())
            cfgs = [with_check_hash(c) for c in facts["pretrained_cfgs"].values()]
            default = DEFAULT_TAGS.get(name)
            cfgs.sort(key=lambda c: c.get("tag") != default)  # stable: the rest keep their order
            data[name] = cfgs
        path = out_dir / f"{family}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"{path.relative_to(ROOT)}: {len(data)} models, {sum(map(len, data.values()))} cfgs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
