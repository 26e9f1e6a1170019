"""Checkpoint adaptation as pure tensor functions: first-conv input channels and classifier keys."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from zoo.domain.errors import CheckpointMismatchError


def adapt_input_conv(weight: torch.Tensor, in_chans: int, *, name: str = "first conv") -> torch.Tensor:
    """A conv weight [out, in, *k] for in_chans inputs, from one trained on RGB (in == 3).

    1 channel sums the input filters (a grey image is the sum of equal RGB planes); N channels
    repeat the RGB filters cyclically and scale by 3/N, so the response to a constant input keeps
    its magnitude. A checkpoint with 1 or 2 channels adapts to 1 only.
    """
    if weight.ndim < 3:
        raise CheckpointMismatchError(
            f"{name}: expected a conv weight [out, in, *kernel], got shape {tuple(weight.shape)}"
        )
    have = weight.shape[1]
    if in_chans == have:
        return weight
    if in_chans < 1:
        raise CheckpointMismatchError(f"{name}: in_chans={in_chans} is invalid: expected an int >= 1")
    if in_chans == 1 and have <= 3:
        adapted = weight.float().sum(dim=1, keepdim=True)
    elif have == 3:
        repeats = math.ceil(in_chans / 3)
        tiled = weight.float().repeat(1, repeats, *([1] * (weight.ndim - 2)))
        adapted = tiled[:, :in_chans] * (3 / in_chans)
    else:
        raise CheckpointMismatchError(
            f"{name}: cannot adapt a checkpoint with {have} input channels to in_chans={in_chans}; "
            "zoo adapts 3-channel (RGB) first convolutions to any in_chans, and up to 3 channels to 1"
        )
    return adapted.to(weight.dtype)


def under(key: str, prefix: str) -> bool:
    """Whether key names the module prefix or something inside it ('fc' covers 'fc.weight', not 'fc2.weight')."""
    return bool(prefix) and (key == prefix or key.startswith(prefix + "."))


def keys_under(keys: Iterable[str], prefix: str) -> list[str]:
    """The keys inside module prefix, in order."""
    return [k for k in keys if under(k, prefix)]
