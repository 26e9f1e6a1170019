"""What a model costs: parameters, multiply-adds per image (counted on a meta copy) and forward time."""

from __future__ import annotations

import math
import time

import attrs
import torch
from torch import nn

from zoo.services.pruner.probe import CONVS, input_channels, input_size, meta_clone, meta_input, stub_norms

__all__ = ["ModelCost", "count_flops", "measure"]


@attrs.frozen
class ModelCost:
    """Parameters, multiply-adds per image and forward time of one model."""

    params: int
    flops: int
    seconds: float | None = None


def count_flops(model: nn.Module, image_size: int | None = None) -> int:
    """Multiply-adds of the model's Conv/Linear layers for one image (default: its own size), on a meta copy."""
    clone = meta_clone(model)
    stub_norms(clone)
    total = 0

    def hook(module: nn.Module, args: tuple[object, ...], out: object) -> None:
        nonlocal total
        if not isinstance(out, torch.Tensor):
            return
        per_image = out.numel() // max(out.shape[0], 1)
        if isinstance(module, CONVS):
            total += per_image * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            total += per_image * module.in_features

    handles = [m.register_forward_hook(hook) for m in clone.modules() if isinstance(m, (*CONVS, nn.Linear))]
    try:
        with torch.no_grad():
            clone(meta_input(clone, batch=1, image_size=image_size))
    finally:
        for h in handles:
            h.remove()
    return total


def measure(model: nn.Module, *, image_size: int | None = None, batch: int = 1, repeats: int = 5) -> ModelCost:
    """Parameters, multiply-adds and the median forward time (seconds, CPU, eval mode) of a model.

    image_size defaults to the size the model was built for (a ViT's img_size), else 224.
    """
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, image_size)
    x = torch.randn(batch, input_channels(model), *input_size(model, image_size))
    was_training = model.training
    model.eval()
    times: list[float] = []
    with torch.no_grad():
        model(x)  # warm-up: first calls pay for allocation
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    model.train(was_training)
    return ModelCost(params=params, flops=flops, seconds=sorted(times)[len(times) // 2])
