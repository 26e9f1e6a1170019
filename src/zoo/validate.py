"""Accuracy of a classifier on an image folder (torchvision's ImageFolder layout: one folder per class):
top-1, top-5, images per second and per-class accuracy, with the model's own preprocessing."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import attrs
import torch

from zoo.devices import AmpDtype, amp_dtype, resolve_device
from zoo.domain.checks import check_bool, check_int
from zoo.domain.errors import DatasetError, InvalidValueError, ZooError

if TYPE_CHECKING:
    from PIL.Image import Image
    from torch import nn

__all__ = ["ClassAccuracy", "ImageFolderSamples", "Mapping", "ValidationResult", "class_indices", "validate_model"]

Mapping = Literal["label_names", "imagenet-synsets", "sorted-folders"]


@attrs.frozen(kw_only=True)
class ClassAccuracy:
    """One class folder's images and the percentage of them the model ranked first (top1) or in its top k."""

    folder: str
    index: int  # the model's class the folder maps to
    images: int
    top1: float
    top5: float


@attrs.frozen(kw_only=True)
class ValidationResult:
    """What validate_model measured: accuracy in percent, throughput over the whole loop (loading included)."""

    images: int
    top1: float
    top5: float
    top_k: int  # the k of "top5": 5, or the class count of a model with fewer
    seconds: float
    images_per_sec: float
    mapping: Mapping
    device: str
    per_class: tuple[ClassAccuracy, ...]
    unreadable: tuple[str, ...] = ()  # why each file that could not be read was left out

    def to_dict(self) -> dict[str, object]:
        """The result as a plain dict (JSON-ready)."""
        return attrs.asdict(self)


@attrs.frozen
class ImageFolderSamples:
    """An image folder's classes (sorted folder names) and its (path, folder position) samples, sorted."""

    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]

    @classmethod
    def scan(cls, directory: str) -> ImageFolderSamples:
        """The class folders of directory and the image files (the kinds Pillow reads) in each, at any depth."""
        from PIL import Image

        extensions = set(Image.registered_extensions())
        if not os.path.isdir(directory):
            raise DatasetError(f"{directory!r} is not a folder; expected one folder per class holding its images")
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise DatasetError(f"{directory!r} holds no class folders; expected DIR/CLASS/IMAGE (ImageFolder layout)")
        samples: list[tuple[str, int]] = []
        for position, name in enumerate(classes):
            for root, dirs, files in os.walk(os.path.join(directory, name)):
                dirs.sort()
                samples.extend(
                    (os.path.join(root, f), position)
                    for f in sorted(files)
                    if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions
                )
        if not samples:
            raise DatasetError(f"{directory!r} holds no image files in its class folders {list(classes)[:5]}")
        return cls(tuple(classes), tuple(samples))


def class_indices(
    folders: Sequence[str], num_classes: int, label_names: Sequence[str] = ()
) -> tuple[list[int], Mapping]:
    """The model class of each class folder, and the mapping used: the model's label_names where every folder
    is one; ImageNet-1k synset ids (n01440764, ...) for a 1000-class model; else sorted folder order, for a
    dataset with as many classes as the head. Otherwise DatasetError says why each mapping failed."""
    from zoo.data.labels import IMAGENET_1K_CLASSES, imagenet_classes

    reasons: list[str] = []
    if label_names:
        missing = [f for f in folders if f not in label_names]
        if not missing:
            return [list(label_names).index(f) for f in folders], "label_names"
        reasons.append(f"label_names: {missing[:3]} are not among the model's label names")
    else:
        reasons.append("label_names: the model has none")
    synsets = {c.synset: c.index for c in imagenet_classes()}
    unknown = [f for f in folders if f not in synsets]
    if num_classes == IMAGENET_1K_CLASSES and not unknown:
        return [synsets[f] for f in folders], "imagenet-synsets"
    reasons.append(
        f"imagenet-synsets: {unknown[:3]} are not ImageNet-1k synset ids"
        if unknown
        else f"imagenet-synsets: the model has {num_classes} classes, not {IMAGENET_1K_CLASSES}"
    )
    if len(folders) == num_classes:
        return list(range(num_classes)), "sorted-folders"
    reasons.append(f"sorted-folders: {len(folders)} class folders for a head of {num_classes} classes")
    raise DatasetError("the class folders map to no model class: " + "; ".join(reasons))


class _Images(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """The samples as (tensor, target) pairs through the eval transform. A file that cannot be read comes as
    zeros with target -1 - i (i: its position), so that one bad file neither stops the run nor crosses a
    worker process as an exception; the loop leaves it out and says which it was."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: Callable[[Image], torch.Tensor],
        input_size: tuple[int, int, int],
    ) -> None:
        self.samples, self.transform, self.input_size = samples, transform, input_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from zoo.data.predict import load_image

        path, target = self.samples[i]
        try:
            return self.transform(load_image(path, channels=self.input_size[0])), target
        except ZooError:
            return torch.zeros(self.input_size), -1 - i


def _unreadable(path: str, channels: int) -> str:
    """Why the image at path cannot be read (load_image's message, read again in this process)."""
    from zoo.data.predict import load_image

    try:
        load_image(path, channels=channels)
    except ZooError as e:
        return str(e)
    return f"image {path!r} could not be read"  # it could be read now: it changed during the run


def validate_model(
    model: nn.Module,
    directory: str,
    *,
    batch_size: int = 64,
    workers: int = 2,
    device: str | None = None,
    amp: AmpDtype | None = None,
    channels_last: bool = False,
    limit: int | None = None,
    progress: bool | None = None,
) -> ValidationResult:
    """model's accuracy on directory's images (ImageFolder layout), after its own eval preprocessing.

    Classes map as class_indices says (label_names, ImageNet-1k synsets, sorted folders). limit: the first
    N images in sorted order. device: None is cuda where available, else cpu. progress: a tqdm bar on
    stderr (None: where stderr is a terminal). The model is moved to device and left in eval mode.
    """
    from tqdm import tqdm

    from zoo.data import resolve_data_config
    from zoo.data.predict import label_names
    from zoo.data.transforms import create_transform

    batch_size = check_int("batch_size", batch_size, ge=1)
    workers = check_int("workers", workers, ge=0)
    channels_last = check_bool("channels_last", channels_last)
    target_device = resolve_device(device)
    dtype = amp_dtype(amp)
    num_classes = getattr(model, "num_classes", None)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidValueError(f"the model has num_classes={num_classes!r}; validation needs a classifier head")
    folder = ImageFolderSamples.scan(directory)
    indices, mapping = class_indices(folder.classes, num_classes, label_names(model))
    samples = [(path, indices[position]) for path, position in folder.samples]
    if limit is not None:
        samples = samples[: check_int("limit", limit, ge=1)]
    data_cfg = resolve_data_config(model)
    dataset = _Images(samples, create_transform(data_cfg), data_cfg.input_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=target_device.type == "cuda"
    )
    model.eval()
    model.to(target_device).to(memory_format=torch.channels_last if channels_last else torch.preserve_format)
    k = min(5, num_classes)
    hits1 = torch.zeros(num_classes, dtype=torch.long)
    hitsk = torch.zeros(num_classes, dtype=torch.long)
    counts = torch.zeros(num_classes, dtype=torch.long)
    failed: list[int] = []
    show = sys.stderr.isatty() if progress is None else check_bool("progress", progress)
    start = time.perf_counter()
    with torch.inference_mode():
        for images, targets in tqdm(loader, desc="validate", unit="batch", disable=not show):
            x = images.to(target_device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(target_device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = model(x)
            ranked = logits.float().topk(k, dim=1).indices.cpu()
            read = targets >= 0
            failed.extend(int(-1 - t) for t in targets[~read])
            ranked, targets = ranked[read], targets[read]
            first = ranked[:, 0] == targets
            in_k = (ranked == targets[:, None]).any(dim=1)
            counts += torch.bincount(targets, minlength=num_classes)
            hits1 += torch.bincount(targets[first], minlength=num_classes)
            hitsk += torch.bincount(targets[in_k], minlength=num_classes)
    seconds = time.perf_counter() - start
    total = int(counts.sum())
    unreadable = tuple(_unreadable(samples[i][0], data_cfg.input_size[0]) for i in failed)
    if total == 0:
        raise DatasetError(f"no image of {directory!r} could be read: {unreadable[0]}")
    per_class = tuple(
        ClassAccuracy(
            folder=name,
            index=index,
            images=int(counts[index]),
            top1=100.0 * int(hits1[index]) / max(int(counts[index]), 1),
            top5=100.0 * int(hitsk[index]) / max(int(counts[index]), 1),
        )
        for name, index in zip(folder.classes, indices, strict=True)
        if int(counts[index]) > 0
    )
    return ValidationResult(
        images=total,
        top1=100.0 * int(hits1.sum()) / total,
        top5=100.0 * int(hitsk.sum()) / total,
        top_k=k,
        seconds=seconds,
        images_per_sec=total / seconds if seconds > 0 else 0.0,
        mapping=mapping,
        device=str(target_device),
        per_class=per_class,
        unreadable=unreadable,
    )
