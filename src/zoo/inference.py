"""Inference copies at the hardware's limit: batch norm folded, the fastest memory format, the lowest native precision.

optimize_for_inference(model) returns an OptimizedModel: an eval copy of model (model itself is untouched;
on a CPU, its layers and their activations fused into oneDNN calls) whose forward (and forward_features,
forward_intermediates) takes the float32 NCHW tensors callers already pass, converts them to the copy's dtype
and memory format on the way in, and hands floating outputs back in the input's dtype. What it chose, and
why, is its `plan` (an InferencePlan); how far its outputs are from float32 eager ones on an example batch
is its `accuracy` (an AccuracyCheck), with a warning naming the figures when they fall outside
ACCURACY_TOLERANCE / MIN_TOP1_AGREEMENT.
"""

from __future__ import annotations

import copy
import platform
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from zoo.archs.fuse import FoldedNorm, fuse_for_inference
from zoo.archs.fuse_kernels import fuse_kernels, kernels_available
from zoo.domain.checks import check_bool, check_choice
from zoo.domain.errors import InvalidValueError, ZooError

__all__ = [
    "ACCURACY_TOLERANCE",
    "DTYPES",
    "MEMORY_FORMATS",
    "MIN_TOP1_AGREEMENT",
    "AccuracyCheck",
    "InferencePlan",
    "OptimizedModel",
    "native_low_precision",
    "optimize_for_inference",
]

DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
MEMORY_FORMATS: tuple[str, ...] = ("auto", "channels_last", "contiguous")
# The accuracy guard: the largest |optimised - float32 eager| over the largest |float32 eager| output may be at
# most this per dtype (bfloat16 keeps 8 mantissa bits, float16 11), and the top class must agree on at least
# MIN_TOP1_AGREEMENT of the example batch (classifier outputs only).
ACCURACY_TOLERANCE: dict[str, float] = {"float32": 1e-4, "bfloat16": 0.05, "float16": 0.01}
MIN_TOP1_AGREEMENT = 0.99
EXAMPLE_BATCH = 8  # the drawn example's batch when none is given
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@attrs.frozen
class InferencePlan:
    """What optimize_for_inference chose: device, dtype (and why), memory format, folded norms, compilation."""

    device: str
    dtype: str
    dtype_reason: str
    memory_format: str
    folded_norms: int
    fused_kernels: int  # convolutions and linear layers applying their activation (or bias) in one oneDNN call
    unfolded_note: str  # '' when every batch norm folded (or there were none); else why some or all did not
    compiled: bool

    def summary(self) -> str:
        """The choices in one line: 'bfloat16, channels_last, 53 norms folded, 34 fused kernels[, compiled]'."""
        compiled = ", compiled" if self.compiled else ""
        return (
            f"{self.dtype}, {self.memory_format}, {self.folded_norms} norms folded, "
            f"{self.fused_kernels} fused kernels{compiled}"
        )


@attrs.frozen
class AccuracyCheck:
    """The optimised copy against float32 eager on one batch: max relative error and top-1 agreement.

    top1_agreement is None where the outputs are not class scores (a feature extractor's maps).
    """

    batch: int
    max_rel_error: float
    top1_agreement: float | None
    tolerance: float
    within_tolerance: bool


@cache
def _cpu_flags() -> frozenset[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not cpuinfo.is_file():
        return frozenset()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_low_precision(device: torch.device) -> tuple[str, str]:
    """The lowest precision device runs natively, and why: (dtype name, reason)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bfloat16", f"{torch.cuda.get_device_name(device)} runs bfloat16 natively"
        return "float16", f"{torch.cuda.get_device_name(device)} has no native bfloat16; float16 it has"
    if device.type == "cpu":
        native = sorted(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
        if native:
            return "bfloat16", f"the CPU has {' and '.join(native)}"
        return "float32", "the CPU has neither AVX512-BF16 nor AMX: bfloat16 would be emulated, slower"
    return "float32", f"no low-precision rule for device type {device.type!r}"


def _spatial_convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 for m in model.modules())


def _memory_format(model: nn.Module, asked: str) -> str:
    if asked != "auto":
        return asked
    # a conv net runs its convolutions fastest in channels_last (oneDNN, cuDNN); a token model's one patch
    # embedding is no reason to reorder its input
    return "channels_last" if _spatial_convs(model) > 1 else "contiguous"


def _model_device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """model in eval mode for the block, every module's own training flag restored after (model is the user's)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def _map_tensors(out: object, fn: Callable[[torch.Tensor], torch.Tensor]) -> object:
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, dict):
        return {k: _map_tensors(v, fn) for k, v in out.items()}
    if isinstance(out, list | tuple):
        return type(out)(_map_tensors(v, fn) for v in out)
    return out


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in _tensors(v)]
    return []


class OptimizedModel(nn.Module):
    """An inference copy of a model (its `module`) with the conversions optimize_for_inference chose.

    Calls take and return what the original model's do: floating inputs are moved to the copy's device,
    dtype and memory format; floating outputs come back in the input's dtype. Attributes the wrapper does
    not have (feature_info, default_cfg, num_classes, ...) are the copy's.
    """

    def __init__(self, module: nn.Module, plan: InferencePlan, compiled: Callable[..., object] | None) -> None:
        super().__init__()
        self.module = module
        self.plan = plan
        self.accuracy: AccuracyCheck | None = None
        self._dtype = _DTYPES[plan.dtype]
        self._device = torch.device(plan.device)
        self._channels_last = plan.memory_format == "channels_last"
        # held outside the module tree: a compiled wrapper shares module's parameters, it adds none
        self.__dict__["_compiled"] = compiled

    def _in(self, x: object) -> object:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return x
        x = x.to(self._device, self._dtype)
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last and x.ndim == 4 else x

    def _run(self, fn: Callable[..., object], x: torch.Tensor, *args: object, **kwargs: object) -> object:
        out_dtype = x.dtype if x.is_floating_point() else torch.float32
        with torch.inference_mode():
            out = fn(self._in(x), *args, **kwargs)
        return _map_tensors(out, lambda t: t.to(out_dtype) if t.is_floating_point() else t)

    def forward(self, x: torch.Tensor) -> object:
        compiled: Callable[..., object] | None = self.__dict__["_compiled"]
        # not `compiled or module`: a compiled module has no truth value of its own (it forwards len())
        return self._run(self.module if compiled is None else compiled, x)

    def forward_features(self, x: torch.Tensor) -> object:
        """The copy's forward_features, converted as forward is."""
        return self._run(self._method("forward_features"), x)

    def forward_intermediates(self, x: torch.Tensor, *args: object, **kwargs: object) -> object:
        """The copy's forward_intermediates (any of its arguments), converted as forward is."""
        return self._run(self._method("forward_intermediates"), x, *args, **kwargs)

    def _method(self, name: str) -> Callable[..., object]:
        fn: Callable[..., object] | None = getattr(self.module, name, None)
        if fn is None or not callable(fn):
            raise InvalidValueError(f"{type(self.module).__name__} has no {name}: the optimised copy cannot offer it")
        return fn

    def __getattr__(self, name: str) -> Any:  # whatever the copy's attribute is
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = super().__getattr__("module")
            return getattr(module, name)

    def train(self, mode: bool = True) -> OptimizedModel:
        """Refused for mode=True: the copy's norms are folded and its weights may be low precision."""
        if mode:
            raise InvalidValueError(
                "train(True) is invalid on an OptimizedModel: it is an inference copy (norms folded, weights "
                f"in {self.plan.dtype}); train the original model and optimise it again"
            )
        return super().train(False)


def _fold(model: nn.Module) -> tuple[nn.Module, int, str]:
    """model's eval copy with its batch norms folded where they can be, how many were, and a note on the rest."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fused = fuse_for_inference(model)
        except ZooError as e:  # an extractor torch.fx cannot trace: an unfolded copy, and why
            return copy.deepcopy(model).eval(), 0, str(e)
    folded = sum(isinstance(m, FoldedNorm) for m in fused.modules())
    note = "; ".join(str(w.message) for w in caught if "fuse_for_inference" in str(w.message))
    for w in caught:  # anything else is not ours to swallow
        if "fuse_for_inference" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return fused, folded, note


def _example(model: nn.Module, example: torch.Tensor | None) -> torch.Tensor:
    if example is not None:
        if not isinstance(example, torch.Tensor) or not example.is_floating_point() or example.ndim != 4:
            raise InvalidValueError(
                f"example={type(example).__name__} is invalid: expected a floating NCHW image batch (4-d tensor)"
            )
        return example
    cfg = getattr(model, "default_cfg", None)
    size = tuple(getattr(cfg, "input_size", (3, 224, 224)))
    gen = torch.Generator().manual_seed(0)
    return torch.randn(EXAMPLE_BATCH, *size, generator=gen)


def check_accuracy(reference: nn.Module, optimized: OptimizedModel, example: torch.Tensor) -> AccuracyCheck:
    """optimized's outputs against reference's in float32 eval mode on example (reference's flags restored)."""
    device = _model_device(reference)
    with torch.inference_mode(), _evaluating(reference):
        want = _tensors(reference(example.to(device, torch.float32)))
    got = _tensors(optimized(example.to(torch.float32)))
    if len(want) != len(got):
        raise InvalidValueError(f"the optimised copy returned {len(got)} tensors where the model returns {len(want)}")
    rel = 0.0
    for w, g in zip(want, got, strict=True):
        scale = float(w.abs().max()) if w.numel() else 0.0
        diff = float((w.float() - g.to(w.device).float()).abs().max()) if w.numel() else 0.0
        rel = max(rel, diff / scale if scale else diff)
    top1: float | None = None
    if len(want) == 1 and want[0].ndim == 2 and want[0].shape[1] > 1:
        top1 = float((want[0].argmax(1) == got[0].to(want[0].device).argmax(1)).float().mean())
    tol = ACCURACY_TOLERANCE[optimized.plan.dtype]
    ok = rel <= tol and (top1 is None or top1 >= MIN_TOP1_AGREEMENT)
    return AccuracyCheck(int(example.shape[0]), rel, top1, tol, ok)


def optimize_for_inference(
    model: nn.Module,
    *,
    dtype: str = "auto",
    memory_format: str = "auto",
    compile: bool = False,
    example: torch.Tensor | None = None,
    check: bool = True,
) -> OptimizedModel:
    """An eval copy of model made for inference on model's device; model is untouched.

    Batch norms are folded into their convolutions (zoo.fuse_for_inference; a model torch.fx cannot trace
    keeps them, and plan.unfolded_note says why). dtype 'auto' is the lowest precision the device runs
    natively (bfloat16 on a CPU with AVX512-BF16 or AMX and on CUDA devices that have it, float16 on older
    CUDA devices, float32 otherwise); memory_format 'auto' is channels_last for conv nets, contiguous for
    token models. On a CPU with oneDNN (not compiled, not float16) each convolution or linear layer and the
    activation module after it run as one oneDNN call, a linear layer's bias inside its product, and a batch
    norm left unfolded as a depthwise 1x1 convolution (zoo.archs.fuse_kernels; plan.fused_kernels counts
    them). compile=True wraps the copy in torch.compile, which fuses for itself. With check (the default) the
    copy's outputs on example (None: a drawn batch of EXAMPLE_BATCH at the model's input size) are compared
    with float32 eager ones, recorded as .accuracy, and a warning names the figures if they exceed the tolerance.
    """
    if not isinstance(model, nn.Module):
        raise InvalidValueError(f"model={type(model).__name__} is invalid: expected a torch.nn.Module")
    check_choice("dtype", dtype, DTYPES)
    check_choice("memory_format", memory_format, MEMORY_FORMATS)
    check_bool("compile", compile)
    check_bool("check", check)
    example = _example(model, example) if check else example
    device = _model_device(model)
    if dtype == "auto":
        chosen, reason = native_low_precision(device)
    else:
        chosen, reason = dtype, "asked for"
    fmt = _memory_format(model, memory_format)
    module, folded, note = _fold(model)
    # torch.compile fuses for itself, and lowers these kernels only for frozen weights: not for a compiled copy
    fuse = device.type == "cpu" and chosen != "float16" and not compile and kernels_available()
    kernels = fuse_kernels(module) if fuse else 0
    module = module.to(device, _DTYPES[chosen])
    if fmt == "channels_last":
        module = module.to(memory_format=torch.channels_last)
    compiled = torch.compile(module) if compile else None
    plan = InferencePlan(str(device), chosen, reason, fmt, folded, kernels, note, compile)
    optimized = OptimizedModel(module, plan, compiled).eval()
    if check and example is not None:
        optimized.accuracy = check_accuracy(model, optimized, example)
        acc = optimized.accuracy
        if not acc.within_tolerance:
            agreement = "" if acc.top1_agreement is None else f", top-1 agreement {acc.top1_agreement:.1%}"
            warnings.warn(
                f"optimize_for_inference: {type(model).__name__} in {chosen} differs from float32 eager by "
                f"{acc.max_rel_error:.2%} relative on a batch of {acc.batch}{agreement} (tolerance "
                f"{acc.tolerance:.2%}, top-1 at least {MIN_TOP1_AGREEMENT:.0%}); "
                "pass dtype='float32' for exact outputs",
                UserWarning,
                stacklevel=3,  # the caller of zoo.optimize_for_inference
            )
    return optimized
