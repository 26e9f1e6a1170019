"""zoo predict: classify image files with a model and its own preprocessing."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zoo import api
from zoo.domain.checks import check_int

if TYPE_CHECKING:
    from PIL.Image import Image

    from zoo.archs.base import ZooModule


def _cmd_predict(args: argparse.Namespace) -> int:
    from zoo.data.predict import load_image

    spec, cfg = api.default_zoo().registry.resolve(args.model)  # an unknown name fails before any image is read
    name = f"{spec.name}.{cfg.tag}" if cfg.tag else spec.name
    top_k = check_int("--top-k", args.top_k, ge=1)
    images = [load_image(path, channels=cfg.input_size[0]) for path in args.images]
    checkpoint = args.checkpoint
    model = api.create_model(args.model, pretrained=checkpoint is None, checkpoint_path=checkpoint)
    return _predict(model, name, list(zip(args.images, images, strict=True)), top_k, checkpoint, as_json=args.json)


def _predict(
    model: ZooModule,
    name: str,
    images: Sequence[tuple[str, Image]],
    top_k: int,
    checkpoint: str | None,
    *,
    as_json: bool,
) -> int:
    """`zoo predict`'s output for a model already built and its (path, image) pairs; checkpoint names the weights."""
    from zoo.data import resolve_data_config
    from zoo.data.labels import IMAGENET_1K_CLASSES
    from zoo.data.predict import classify

    if model.num_classes:  # none: classify says the model has no classifier
        top_k = check_int("--top-k", top_k, ge=1, le=model.num_classes)
    data_cfg = resolve_data_config(model)
    results = classify(model, [image for _, image in images], top_k=top_k, data_cfg=data_cfg)
    weights = f"checkpoint {checkpoint}" if checkpoint else "pretrained weights"
    if as_json:
        record = {
            "model": name,
            "weights": {"source": "checkpoint" if checkpoint else "pretrained", "checkpoint": checkpoint},
            "data_config": data_cfg.to_dict(),
            "labels": "imagenet-1k" if model.num_classes == IMAGENET_1K_CLASSES else None,
            "images": [
                {"path": path, "predictions": [p.to_dict() for p in preds]}
                for (path, _), preds in zip(images, results, strict=True)
            ],
        }
        print(json.dumps(record, indent=2))
        return 0
    height, width = data_cfg.image_size
    print(
        f"{name} ({weights}); input {height}x{width}, {data_cfg.interpolation}, "
        f"crop_pct {data_cfg.crop_pct} ({data_cfg.crop_mode})"
    )
    for (path, _), preds in zip(images, results, strict=True):
        print(path)
        for rank, p in enumerate(preds, 1):
            label = f"{p.label}  ({p.index}, {p.synset})" if p.label is not None else f"class {p.index}"
            print(f"  {rank:>2}. {p.probability * 100:6.2f}%  {label}")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the `zoo` parser's subcommands."""
    p = sub.add_parser("predict", help="classify image files: the top classes and their probabilities")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--model", required=True, help="NAME or NAME.TAG; its cfg gives the preprocessing")
    p.add_argument("--checkpoint", metavar="PATH", help="weights to load (default: the tag's published weights)")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default: 5)")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(func=_cmd_predict)
