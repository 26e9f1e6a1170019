"""zoo.fuse_for_inference, importing its machinery (torch.fx, zoo's layers) only when first called."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch import nn

M = TypeVar("M", bound="nn.Module")

__all__ = ["fuse_for_inference"]


def fuse_for_inference(model: M, *, strict: bool = False) -> M:
    """An eval-mode copy of model (same class) with batch norms folded into their convolutions; see zoo.archs.fuse."""
    from zoo.archs.fuse import fuse_for_inference as fuse

    return fuse(model, strict=strict)
