"""Hand check that zoo.data's eval transform gives timm's tensor for the same PIL image and cfg.

Run in a throwaway environment that has timm and torchvision installed (never in CI, never a dependency):
    PYTHONPATH=src python tools/check_data_parity.py
For each cfg (input size, crop_pct, interpolation, crop mode) and each test image (photographic-like
smooth gradients with noise, in landscape, portrait, square, small and extreme shapes) it builds
timm's eval transform (timm.data.create_transform on timm.data.resolve_data_config) and zoo's
(zoo.data.create_transform on zoo.data.resolve_data_config) and prints the max |difference| of the
output tensors. It also compares the resolved data configs of the catalogue's pretrained tags with
timm's for the same names, and the reference's own call shapes: resolve_data_config(args, model=model)
and resolve_model_data_config(model, args) with every combination of the args keys a training or
validation script passes (ARGS_CHOICES), on one model of each family (MODELS, built on the meta device
in both libraries), without and with use_test_size.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import numpy as np
import timm  # type: ignore[import-not-found]  # throwaway environment only
import timm.data  # type: ignore[import-not-found]  # throwaway environment only
import torch
from PIL import Image

import zoo
from zoo.data import create_transform, resolve_data_config, resolve_model_data_config

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


# one model a family, with cfgs that differ in size, crop, interpolation, mean/std and test size
MODELS = ("resnet50", "convnext_tiny", "efficientnet_b3", "vit_base_patch16_224", "xception41", "regnety_032")
ARGS_CHOICES: dict[str, tuple[object, ...]] = {
    "input_size": (None, (3, 256, 256), (3, 200, 320)),
    "img_size": (None, 288),
    "crop_pct": (None, 0.9),
    "interpolation": (None, "bilinear"),
    "mean": (None, (0.5, 0.5, 0.5)),
    "crop_mode": (None, "squash"),
}


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
    return 1 if worst > 0 or mismatched or call_shapes() else 0


def plain(config: Any) -> dict[str, object]:
    """A resolved data config as a dict with lists for tuples, whichever library resolved it."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(config).items()}


def call_shapes() -> int:
    """resolve_data_config(args, model=) and resolve_model_data_config(model, args) against timm's; mismatches."""
    compared = mismatched = 0
    keys = list(ARGS_CHOICES)
    for name in MODELS:
        if name not in zoo.list_models() or name not in timm.list_models():
            print(f"call shapes: {name} is not in both libraries, skipped")
            continue
        with torch.device("meta"):
            ours_model, their_model = zoo.create_model(name), timm.create_model(name)
        for values in itertools.product(*ARGS_CHOICES.values()):
            args = {k: v for k, v in zip(keys, values, strict=True) if v is not None}
            if "mean" in args:
                args["std"] = args["mean"]
            for test in (False, True):
                ours = [
                    resolve_data_config(dict(args), model=ours_model, use_test_size=test),
                    resolve_model_data_config(ours_model, dict(args), use_test_size=test),
                ]
                theirs = [
                    timm.data.resolve_data_config(dict(args), model=their_model, use_test_size=test),
                    timm.data.resolve_model_data_config(their_model, dict(args), use_test_size=test),
                ]
                for a, b in zip(ours, theirs, strict=True):
                    compared += 1
                    if plain(a) != plain(b):
                        mismatched += 1
                        print(f"CALL SHAPE MISMATCH {name} args={args} use_test_size={test}: {plain(a)} vs {plain(b)}")
    print(f"call shapes: {compared} calls of resolve_data_config / resolve_model_data_config, {mismatched} mismatched")
    return mismatched


if __name__ == "__main__":
    sys.exit(main())
