"""Classify image files with a model and its own preprocessing: load_image, classify, Prediction."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import torch
from torch import nn

from zoo.data.config import DataConfig, resolve_data_config
from zoo.data.labels import IMAGENET_1K_CLASSES, ImageNetClass, imagenet_classes
from zoo.domain.checks import check_int, is_int
from zoo.domain.errors import FeatureNotAvailableError, InvalidValueError

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["Prediction", "classify", "label_names", "load_image"]

_MODES = {1: "L", 3: "RGB"}


@attrs.frozen(kw_only=True)
class Prediction:
    """One of an image's top classes: its index, probability, and ImageNet-1k name and synset where known."""

    index: int
    probability: float
    label: str | None = None
    synset: str | None = None

    def to_dict(self) -> dict[str, object]:
        """Plain-data form, for JSON."""
        return attrs.asdict(self)


def load_image(path: str | os.PathLike[str], *, channels: int = 3) -> Image:
    """The image file at path, decoded and converted to RGB (channels=3) or greyscale (channels=1)."""
    try:
        from PIL import Image as PILImage
    except ImportError as e:
        raise FeatureNotAvailableError(
            f"reading images needs Pillow, the optional extra of zoo: pip install 'zoo[data]' ({e})"
        ) from e
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidValueError(
            f"path={path!r} is invalid: expected the path of one image file (str or os.PathLike); "
            "load several with one call each"
        )
    if not is_int(channels) or channels not in _MODES:
        raise InvalidValueError(f"channels={channels!r} is invalid: images load with 1 (greyscale) or 3 (RGB) channels")
    try:
        with PILImage.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not half-way through a batch
            _warn_if_lossy(img, os.fspath(path))
            converted: Image = img.convert(_MODES[channels])
            return converted
    except (OSError, ValueError, TypeError, PILImage.DecompressionBombError) as e:
        # FileNotFoundError, IsADirectoryError, UnidentifiedImageError and truncated data are all OSErrors
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InvalidValueError(f"image {os.fspath(path)!r} cannot be read: {reason}") from None


def _warn_if_lossy(img: Image, path: str) -> None:
    # the models were trained on 8-bit colour without transparency; what converting drops can change a prediction
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        warnings.warn(
            f"image {path!r} has an alpha channel ({img.mode}); it is dropped and transparent pixels keep "
            "their stored colour: flatten the image onto a background first if that matters",
            UserWarning,
            stacklevel=3,
        )
    elif img.mode in ("I", "F") or img.mode.startswith("I;16"):
        warnings.warn(
            f"image {path!r} has {img.mode} pixels (more than 8 bits); converting to 8 bits clips values above 255: "
            "scale it to 0..255 first if that matters",
            UserWarning,
            stacklevel=3,
        )


def _class_count(model: nn.Module) -> int:
    if not isinstance(model, nn.Module):
        raise InvalidValueError(f"model={model!r} is invalid: expected a classifier (a torch.nn.Module)")
    count = getattr(model, "num_classes", None)
    if not isinstance(count, int) or count <= 0:
        raise InvalidValueError(
            f"{type(model).__qualname__} has no classifier (num_classes={count!r}); "
            "build it with num_classes > 0 (and without features_only) to classify images"
        )
    return count


def classify(
    model: nn.Module,
    images: Sequence[Image | torch.Tensor],
    *,
    top_k: int = 5,
    data_cfg: DataConfig | None = None,
    batch_size: int = 8,
) -> list[tuple[Prediction, ...]]:
    """The top_k classes of each image, most probable first, after the eval transform of data_cfg.

    data_cfg defaults to the model's own (resolve_data_config(model)). Classes are named by the model's
    saved label_names, else, for a 1000-class model, from ImageNet-1k. The model runs in eval mode and is
    left in the mode it was in.
    """
    from zoo.data.transforms import create_transform

    classes = _class_count(model)
    _check_images(images)
    k = check_int("top_k", top_k, ge=1, le=classes)
    size = check_int("batch_size", batch_size, ge=1)
    cfg = resolve_data_config(model) if data_cfg is None else data_cfg
    transform = create_transform(cfg)
    names = label_names(model) or (imagenet_classes() if classes == IMAGENET_1K_CLASSES else None)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    results: list[tuple[Prediction, ...]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(images), size):
                batch = torch.stack([transform(img) for img in images[start : start + size]]).to(device)
                probs = model(batch).float().softmax(dim=-1)
                top = probs.topk(k, dim=-1)
                for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                    results.append(tuple(_prediction(i, p, names) for i, p in zip(indices, values, strict=True)))
    finally:
        model.train(was_training)
    return results


def _check_images(images: object) -> None:
    """images must be a sequence (not a str or bytes) of PIL images or image tensors, or a batch tensor."""
    from PIL.Image import Image as PILImage

    expected = "expected a list of PIL images or image tensors (read files with load_image)"
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return  # a batch: its images are checked by the transform
    if isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Sequence):
        raise InvalidValueError(f"images={images!r} is invalid: {expected}")
    for i, image in enumerate(images):
        if not isinstance(image, (PILImage, torch.Tensor)):
            raise InvalidValueError(f"images[{i}]={image!r} is invalid: {expected}")


def label_names(model: nn.Module) -> tuple[str, ...]:
    """The class names a model was saved with (save_pretrained's label_names), or () when it has none."""
    from zoo.domain.values import BuildRecord

    record = getattr(model, "build_record", None)
    names = record.label_names if isinstance(record, BuildRecord) else ()
    return names if len(names) == getattr(model, "num_classes", None) else ()


def _prediction(index: int, probability: float, names: Sequence[ImageNetClass | str] | None) -> Prediction:
    if names is None:
        return Prediction(index=index, probability=probability)
    entry = names[index]
    if isinstance(entry, str):  # a saved model's own class names: no synset
        return Prediction(index=index, probability=probability, label=entry)
    return Prediction(index=index, probability=probability, label=entry.name, synset=entry.synset)
