"""zoo predict: classify image files with a model and its own preprocessing."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zoo import api
from zoo.cli._common import DEVICE_HELP, OPTIMIZE_HELP, Subcommands, optimized, say
from zoo.devices import resolve_device
from zoo.domain.checks import check_int
from zoo.domain.errors import InvalidValueError, ZooError

if TYPE_CHECKING:
    from PIL.Image import Image

    from zoo import ZooModule
    from zoo.inference import OptimizedModel

DEFAULT_TOP_K = 5  # capped at the model's class count


def _cmd_predict(args: argparse.Namespace) -> int:
    from zoo.data.predict import load_image
    from zoo.describe import is_saved_name

    # an unknown name (or a saved model that cannot be read) fails before any image is read
    cfg = api.get_default_cfg(args.model)
    if is_saved_name(args.model):
        name = args.model
    else:
        spec, _ = api.default_zoo().registry.resolve(args.model)
        name = f"{spec.name}.{cfg.tag}" if cfg.tag else spec.name
    top_k = None if args.top_k is None else check_int("--top-k", args.top_k, ge=1)
    device = resolve_device(args.device)
    channels = cfg.input_size[0]
    if channels not in (1, 3):
        raise InvalidValueError(
            f"--model {args.model!r} takes {channels}-channel input; predict reads image files as 1 (greyscale) "
            "or 3 (RGB) channels"
        )
    paths, failed = _image_files(args.images)
    images: list[tuple[str, Image]] = []
    for path in paths:
        try:
            images.append((path, load_image(path, channels=channels)))
        except ZooError as e:  # one unreadable file is reported; the others are still classified
            failed.append((path, str(e)))
    code = 0
    if images:
        checkpoint = args.checkpoint
        model = api.create_model(args.model, pretrained=checkpoint is None, checkpoint_path=checkpoint)
        model.to(device)
        runner = optimized(model, args) if args.optimize else model
        code = _predict(runner, name, images, top_k, checkpoint, as_json=args.json, failed=failed)
    for _, message in failed:
        say("error", message)
    return 2 if failed else code


def _image_files(arguments: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The files to classify: each argument, a folder standing for the image files in it (by extension,
    sorted, not its subfolders); and (argument, message) for each folder that holds none."""
    from PIL import Image as PILImage

    extensions = set(PILImage.registered_extensions())
    paths: list[str] = []
    failed: list[tuple[str, str]] = []
    for argument in arguments:
        try:
            is_folder = os.path.isdir(argument)
        except ValueError:  # a NUL byte: load_image names it as a file it cannot read
            is_folder = False
        if not is_folder:
            paths.append(argument)
            continue
        try:
            entries = sorted(os.scandir(argument), key=lambda e: e.name)
        except OSError as e:
            failed.append((argument, f"folder {argument!r} cannot be read: {e.strerror or e}"))
            continue
        found = [
            os.path.join(argument, e.name)
            for e in entries
            if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in extensions and e.is_file()
        ]
        if not found:
            none = f"folder {argument!r} holds no image file (.jpg, .png, .webp, ...: the kinds Pillow reads)"
            failed.append((argument, none))
        paths.extend(found)
    return paths, failed


def _predict(
    model: ZooModule | OptimizedModel,
    name: str,
    images: Sequence[tuple[str, Image]],
    top_k: int | None,
    checkpoint: str | None,
    *,
    as_json: bool,
    failed: Sequence[tuple[str, str]] = (),
) -> int:
    """`zoo predict`'s output for a model already built and its (path, image) pairs; checkpoint names the weights.

    top_k None: DEFAULT_TOP_K, or every class of a model with fewer. failed: (path, message) of the files that
    could not be read, listed in the JSON record (the caller says them on stderr).
    """
    from zoo.data import resolve_data_config
    from zoo.data.labels import IMAGENET_1K_CLASSES
    from zoo.data.predict import classify, label_names

    classes = model.num_classes
    if top_k is None:
        top_k = min(DEFAULT_TOP_K, classes) if classes else DEFAULT_TOP_K
    elif classes:  # none: classify says the model has no classifier
        top_k = check_int("--top-k", top_k, ge=1, le=classes)
    data_cfg = resolve_data_config(model)
    results = classify(model, [image for _, image in images], top_k=top_k, data_cfg=data_cfg)
    weights = f"checkpoint {checkpoint}" if checkpoint else "pretrained weights"
    if as_json:
        labels = "saved" if label_names(model) else "imagenet-1k" if classes == IMAGENET_1K_CLASSES else None
        record = {
            "model": name,
            "weights": {"source": "checkpoint" if checkpoint else "pretrained", "checkpoint": checkpoint},
            "data_config": data_cfg.to_dict(),
            "labels": labels,
            "images": [
                {"path": path, "predictions": [p.to_dict() for p in preds]}
                for (path, _), preds in zip(images, results, strict=True)
            ]
            + [{"path": path, "error": message} for path, message in failed],
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
            if p.label is None:
                label = f"class {p.index}"
            else:
                label = f"{p.label}  ({p.index}, {p.synset})" if p.synset else f"{p.label}  ({p.index})"
            print(f"  {rank:>2}. {p.probability * 100:6.2f}%  {label}")
    return 0


def add_parsers(sub: Subcommands) -> None:
    """Add this module's commands to the `zoo` parser's subcommands."""
    p = sub.add_parser(
        "predict",
        help="classify image files: the top classes and their probabilities",
        description="Classify image files. A file that cannot be read is reported on stderr and the others are "
        "still classified; the exit status is then 2.",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (any format Pillow reads), or folders: every image file in one (not its subfolders)",
    )
    p.add_argument(
        "--model",
        required=True,
        help="NAME, NAME.TAG, local-dir:PATH or hf-hub:ORG/NAME; its cfg gives the preprocessing, a saved "
        "model's label_names name its classes",
    )
    p.add_argument("--checkpoint", metavar="PATH", help="weights to load (default: the name's weights)")
    p.add_argument(
        "--top-k",
        type=int,
        help=f"classes to show per image (default: {DEFAULT_TOP_K}, or every class of a model with fewer)",
    )
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--optimize", action="store_true", help=OPTIMIZE_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(func=_cmd_predict)
