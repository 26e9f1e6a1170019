"""Small helpers for building layers: rounding, padding, and whether TorchScript is compiling."""

from __future__ import annotations

from torch._jit_internal import is_scripting

__all__ = ["OUTPUT_STRIDES", "get_padding", "is_scripting", "make_divisible"]

# the strides of its last map a dilating network can be built at (past it, stages dilate instead of striding)
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round v to a multiple of divisor, never dropping below round_limit of v."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric padding that keeps a stride-1 convolution's size (the 'same'-ish static padding)."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2
