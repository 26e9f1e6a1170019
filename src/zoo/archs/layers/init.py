"""Initialising a whole model in one pass: the family's own rules, torch's defaults for everything else."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

__all__ = ["default_bias_", "init_each_module", "owns_state"]


def owns_state(module: nn.Module) -> bool:
    """Whether module holds parameters or persistent buffers of its own (not its children's)."""
    if next(module.parameters(recurse=False), None) is not None:
        return True
    # non-persistent buffers are computed at construction (a blur filter), never initialised
    transient: set[str] = getattr(module, "_non_persistent_buffers_set", set())
    return any(name not in transient for name, _ in module.named_buffers(recurse=False))


def default_bias_(module: nn.Conv1d | nn.Conv2d | nn.Linear) -> None:
    """torch's default bias init for a convolution or linear layer: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    if module.bias is None:
        return
    fan_in = module.weight[0].numel()  # input channels (per group) times the kernel area
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(module.bias, -bound, bound)


def init_each_module(model: nn.Module, rule: Callable[[nn.Module], bool], *, fresh: bool = True) -> None:
    """Initialise a model by its family's rule, module by module (in named_modules order).

    rule(module) initialises a module the family treats specially and returns True. fresh (one-pass
    creation: parameters materialised, nothing written yet) gives every other module with state of
    its own torch's default, its reset_parameters(); a module with state and neither is a bug in the
    family (its tensors would keep whatever memory held), so it raises. Without fresh (construction:
    each layer has drawn torch's defaults already) the rule alone runs: the same rules on both paths.
    """
    for path, module in model.named_modules():
        if rule(module) or not fresh or not owns_state(module):
            continue
        reset = getattr(module, "reset_parameters", None)
        if not callable(reset):
            raise TypeError(
                f"{type(model).__name__}.init_all_weights cannot initialise {path or 'the model'} "
                f"({type(module).__name__}): it has parameters or buffers, no reset_parameters(), "
                "and the family's rule does not cover it"
            )
        reset()
