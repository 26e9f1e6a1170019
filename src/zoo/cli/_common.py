"""What the commands share."""

from __future__ import annotations


def _count_params(model: object) -> int:
    from torch import nn

    assert isinstance(model, nn.Module)
    return sum(p.numel() for p in model.parameters())
