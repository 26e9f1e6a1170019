"""Activation checkpointing that leaves batch-norm statistics as one forward pass leaves them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_call"]

T = TypeVar("T")


@contextlib.contextmanager
def _norm_stats_kept(module: nn.Module) -> Iterator[None]:
    # the recomputation runs the forward a second time: in training mode batch norm would update its running
    # statistics twice, so they are put back as the first (real) forward left them
    saved = [
        (buf, buf.detach().clone())
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
        for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buf is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def checkpoint_call(module: nn.Module, fn: Callable[..., T], *args: torch.Tensor) -> T:
    """fn(*args) under non-reentrant activation checkpointing; module's batch-norm statistics update once."""
    out: T = checkpoint(
        fn,
        *args,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _norm_stats_kept(module)),
    )
    return out
