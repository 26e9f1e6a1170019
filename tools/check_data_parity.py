"""Hand check that zoo.data's eval transform gives timm's tensor for the same PIL image and cfg.

Run in a throwaway environment that has timm and torchvision installed (never in CI, never a dependency):
    PYTHONPATH=src python tools/check_data_parity.py
For each cfg (input size, crop_pct, interpolation, crop mode) and each test image (photographic-like
smooth gradients with noise, in landscape, portrait, square, small and extreme shapes) it builds
timm's eval transform (timm.data.create_transform on timm.data.resolve_data_config) and zoo's
(zoo.data.create_transform on zoo.data.resolve_data_config) and prints the max |difference| of the
output tensors. It also compares the resolved data configs of the catalogue's pretrained tags with
timm's for the same names.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import timm  # type: ignore[import-not-found]  # throwaway environment only
import timm.data  # type: ignore[import-not-found]  # throwaway environment only
from PIL import Image

import zoo
from zoo.data import create_transform, resolve_data_config

IMAGE_SIZES = ((500, 375), (375, 500), (224, 224), (97, 150), (640, 257), (333, 333), (1024, 683))  # (width, height)
CFGS: list[dict[str, object]] = [
    {"input_size": (3, h, w), "crop_pct": pct, "interpolation": interp, "crop_mode": mode}
    for (h, w), pct, interp, mode in itertools.product(
        ((224, 224), (299, 299), (160, 160), (192, 256)),
        (0.875, 0.95, 1.0, 0.887),
        ("bicubic", "bilinear", "nearest"),
        ("center", "squash", "border"),
    )
]


def image(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic RGB image: smooth colour gradients, a disc, and pixel noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 127 + 120 * np.sin(x / (7 + seed)) * np.cos(y / 11)
    g = 255 * x / max(width - 1, 1)
    b = 255 * ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2)
    arr = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def main() -> int:
    worst = 0.0
    images = [image(w, h, i) for i, (w, h) in enumerate(IMAGE_SIZES)]
    for cfg in CFGS:
        ours = create_transform(resolve_data_config(zoo.get_default_cfg("resnet18").evolve(cfg)))
        theirs = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=dict(cfg)))
        cfg_worst = 0.0
        for img in images:
            a, b = ours(img), theirs(img)
            if a.shape != b.shape:
                print(f"SHAPE MISMATCH {cfg} {img.size}: {tuple(a.shape)} vs {tuple(b.shape)}")
                return 1
            cfg_worst = max(cfg_worst, (a - b).abs().max().item())
        worst = max(worst, cfg_worst)
        print(f"{cfg}: max |diff| {cfg_worst:.3g} over {len(images)} images")
    print(f"eval transforms: {len(CFGS)} cfgs x {len(images)} images, max |diff| {worst:.3g}")

    mismatched = compared = 0
    names = zoo.list_models(pretrained=True, include_tags=True)
    for name in names:
        for test in (False, True):
            our_cfg = resolve_data_config(name, use_test_size=test).to_dict()
            try:
                pcfg = timm.models.get_pretrained_cfg(name)
            except Exception:  # a name timm no longer has
                pcfg = None
            if pcfg is None:
                continue
            compared += 1
            resolved = timm.data.resolve_data_config(pretrained_cfg=pcfg.to_dict(), use_test_size=test)
            their_cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}
            if our_cfg != their_cfg:
                mismatched += 1
                print(f"DATA CONFIG MISMATCH {name} use_test_size={test}: {our_cfg} vs {their_cfg}")
    print(f"data configs: {compared} compared ({len(names)} pretrained tags x use_test_size), {mismatched} mismatched")
    return 1 if worst > 0 or mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
