"""Absolute position embeddings: resampling a learned grid of embeddings to another grid size."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.archs.layers.helpers import is_scripting

__all__ = ["POS_EMBED_INTERPOLATIONS", "resample_abs_pos_embed"]

POS_EMBED_INTERPOLATIONS: tuple[str, ...] = ("bicubic", "bilinear")


def _symbolic(size: list[int]) -> bool:
    """Whether a size is a traced symbol (torch.SymInt) rather than a number."""
    if is_scripting():  # TorchScript compiles only this branch (its sizes are numbers), so the else must stay
        return False
    else:
        return any(isinstance(s, torch.SymInt) for s in size)


def resample_abs_pos_embed(
    posemb: torch.Tensor,
    new_size: list[int],
    old_size: list[int],
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """posemb [1, prefix + old_h * old_w, C] resampled to [1, prefix + new_h * new_w, C]; the prefix rows are kept.

    The grid rows are interpolated as a C-channel image (in float32, then back to posemb's dtype);
    antialias matters when shrinking the grid. posemb itself comes back when the sizes agree, except
    while torch.export or dynamo trace a symbolic size: a branch on its value would fix the traced program to
    that one grid (at the grid it was made for, resampling is the identity).
    """
    if not _symbolic(new_size) and new_size[0] == old_size[0] and new_size[1] == old_size[1]:
        return posemb
    prefix = posemb[:, :num_prefix_tokens]
    grid = posemb[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    image = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=[new_size[0], new_size[1]], mode=interpolation, antialias=antialias)
    grid = image.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], dim).to(posemb.dtype)
    return torch.cat([prefix, grid], dim=1)
