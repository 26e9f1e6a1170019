"""ImageNet-1k class names, shipped as package data (imagenet_1k.tsv), in class-index order."""

from __future__ import annotations

import functools
from importlib import resources

import attrs

__all__ = ["ImageNetClass", "imagenet_classes"]

IMAGENET_1K_CLASSES = 1000


@attrs.frozen
class ImageNetClass:
    """One ImageNet-1k class: its index, WordNet synset id, short name and WordNet lemmas."""

    index: int
    synset: str
    name: str
    lemmas: str


@functools.cache  # read once; the tuple is immutable, so every caller may share it
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 ImageNet-1k classes in class-index order (the order of every in1k classifier's outputs)."""
    text = resources.files("zoo.data").joinpath("imagenet_1k.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    classes = tuple(ImageNetClass(i, synset, name, lemmas) for i, (synset, name, lemmas) in enumerate(rows))
    if len(classes) != IMAGENET_1K_CLASSES:  # a broken install, not a user error
        raise RuntimeError(f"zoo's imagenet_1k.tsv holds {len(classes)} classes, not {IMAGENET_1K_CLASSES}")
    return classes
