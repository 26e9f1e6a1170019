"""Throughput of a registered model on this machine: warm-up steps, then timed steps synchronised on the
device; samples per second, step time, parameters, GMACs and peak memory, under the column names of the
reference library's published benchmark CSVs (infer_samples_per_sec, infer_step_time, ...)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import attrs

from zoo import api
from zoo.devices import AmpDtype, amp_dtype, resolve_device
from zoo.domain.checks import check_bool, check_int
from zoo.domain.errors import InvalidValueError, ZooError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["BenchmarkResult", "Timing", "benchmark_model"]

DEFAULT_WARMUP = 10  # the reference's benchmark script's defaults
DEFAULT_STEPS = 40


@attrs.frozen(kw_only=True)
class Timing:
    """One benchmarked mode: samples per second, mean step time (ms), batch, image side, peak memory (MiB, CUDA)."""

    samples_per_sec: float
    step_time: float
    batch_size: int
    img_size: int
    peak_mem_mb: float | None


@attrs.frozen(kw_only=True)
class BenchmarkResult:
    """A model's benchmark: inference always, training where asked; its size and cost; how it ran."""

    model: str
    param_count: float  # millions, as the reference publishes it
    gmacs: float  # billions of multiply-accumulates per image (zoo's count: convolutions and linear layers)
    infer: Timing
    train: Timing | None
    device: str
    amp: str | None
    channels_last: bool
    compiled: bool
    fused: bool
    optimized: str | None = None  # zoo.optimize_for_inference's choices, where it was used

    def to_dict(self) -> dict[str, object]:
        """One row under the reference's column names (infer_*, train_* where run, param_count), then zoo's."""
        row: dict[str, object] = {"model": self.model}
        for mode, timing in (("infer", self.infer), ("train", self.train)):
            if timing is not None:
                row[f"{mode}_samples_per_sec"] = round(timing.samples_per_sec, 2)
                row[f"{mode}_step_time"] = round(timing.step_time, 3)
                row[f"{mode}_batch_size"] = timing.batch_size
                row[f"{mode}_img_size"] = timing.img_size
                if mode == "infer":
                    row["infer_gmacs"] = round(self.gmacs, 2)
                row[f"{mode}_peak_mem_mb"] = None if timing.peak_mem_mb is None else round(timing.peak_mem_mb, 1)
        row["param_count"] = round(self.param_count, 2)
        row.update(
            device=self.device,
            amp=self.amp,
            channels_last=self.channels_last,
            compiled=self.compiled,
            fused=self.fused,
            optimized=self.optimized,
        )
        return row


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> tuple[float, float | None]:
    """Seconds that steps calls of step took after warmup calls, and the peak CUDA memory meanwhile (MiB)."""
    import torch

    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return seconds, peak


_T = TypeVar("_T")


@attrs.frozen
class _Fits:
    """Runs a step of the benchmark; what torch refuses about the request (the image size, the memory a batch
    needs) becomes an InvalidValueError naming it, not an internal error."""

    name: str
    batch_size: int
    height: int
    width: int
    device: str

    def __call__(self, step: Callable[[], _T]) -> _T:
        import torch

        try:
            return step()
        except ZooError:
            raise
        except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError, under the name torch < 2.5 has too
            raise InvalidValueError(
                f"batch_size={self.batch_size} of {self.height}x{self.width} images of {self.name!r} does not fit "
                f"in {self.device}'s memory; try a smaller batch_size"
            ) from None
        except (RuntimeError, ValueError, IndexError) as e:
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise InvalidValueError(
                f"img_size={self.height} is invalid for {self.name!r} (or its other options): {first[:300]}"
            ) from None


def benchmark_model(
    name: str,
    *,
    batch_size: int = 32,
    img_size: int | None = None,
    device: str | None = None,
    amp: AmpDtype | None = None,
    channels_last: bool = False,
    compile: bool = False,
    fuse: bool = False,
    train: bool = False,
    optimize: bool = False,
    warmup: int = DEFAULT_WARMUP,
    steps: int = DEFAULT_STEPS,
    zoo: api.ModelZoo | None = None,
) -> BenchmarkResult:
    """Time name (random weights: speed does not depend on them) on device with a random batch.

    img_size: a square side (default: the cfg's input size). fuse folds batch norms (inference only, so not
    with train). train also times forward, cross-entropy backward and an SGD step. optimize times
    zoo.optimize_for_inference's copy instead (its own precision, memory format and folding: not with amp,
    channels_last, fuse or train; compile goes to it), fed float32 NCHW batches as callers feed it. device
    None: cuda where available, else cpu.
    """
    import torch

    from zoo.describe import count_macs

    zoo = zoo or api.default_zoo()
    batch_size = check_int("batch_size", batch_size, ge=1)
    warmup = check_int("warmup", warmup, ge=0)
    steps = check_int("steps", steps, ge=1)
    flags = {
        k: check_bool(k, v)
        for k, v in (
            ("channels_last", channels_last),
            ("compile", compile),
            ("fuse", fuse),
            ("train", train),
            ("optimize", optimize),
        )
    }
    if flags["fuse"] and flags["train"]:
        raise InvalidValueError("fuse=True with train=True is invalid: fused batch norms are for inference only")
    if flags["optimize"]:
        chosen = [k for k in ("channels_last", "fuse", "train") if flags[k]] + (["amp"] if amp else [])
        if chosen:
            raise InvalidValueError(
                f"optimize=True with {', '.join(chosen)} is invalid: optimize chooses the precision, memory format "
                "and folding itself, for inference only"
            )
    target = resolve_device(device)
    dtype = amp_dtype(amp)
    cfg = zoo.get_default_cfg(name)
    channels, height, width = cfg.input_size
    if img_size is not None:
        height = width = check_int("img_size", img_size, ge=1, le=4096)
    model: nn.Module = zoo.create_model(name)
    params = sum(p.numel() for p in model.parameters())
    fits = _Fits(name, batch_size, height, width, str(target))
    macs = fits(lambda: count_macs(model, height) if height == width else count_macs(model))
    memory_format = torch.channels_last if flags["channels_last"] else torch.preserve_format
    x = torch.randn(batch_size, channels, height, width, device=target).contiguous(memory_format=memory_format)

    def prepared(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        module.to(target).to(memory_format=memory_format)
        run: Callable[[torch.Tensor], torch.Tensor] = torch.compile(module) if flags["compile"] else module
        return run

    def autocast() -> torch.autocast:
        return torch.autocast(target.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    optimized = None
    if flags["optimize"]:
        copy = api.optimize_for_inference(model.to(target), compile=flags["compile"], check=False)
        optimized = copy.plan.summary()
        forward: Callable[[torch.Tensor], object] = copy
    else:
        infer_model = api.fuse_for_inference(model) if flags["fuse"] else model
        infer_model.eval()
        forward = prepared(infer_model)

    def infer_step() -> None:
        with torch.inference_mode(), autocast():
            forward(x)

    def timing(step: Callable[[], None]) -> Timing:
        seconds, peak = fits(lambda: _timed(step, target, warmup, steps))
        return Timing(
            samples_per_sec=batch_size * steps / seconds,
            step_time=1000 * seconds / steps,
            batch_size=batch_size,
            img_size=height,
            peak_mem_mb=peak,
        )

    infer = timing(infer_step)
    train_timing = None
    if flags["train"]:
        model.train()
        train_forward = prepared(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
        classes = int(getattr(model, "num_classes", 0) or 0)
        if classes < 1:
            raise InvalidValueError(f"train=True needs a classifier head; {name!r} has num_classes={classes}")
        targets = torch.randint(classes, (batch_size,), device=target)

        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(train_forward(x), targets)
            torch.autograd.backward(loss)
            optimizer.step()

        train_timing = timing(train_step)
    return BenchmarkResult(
        model=name,
        param_count=params / 1e6,
        gmacs=macs / 1e9,
        infer=infer,
        train=train_timing,
        device=str(target),
        amp=amp,
        channels_last=flags["channels_last"],
        compiled=flags["compile"],
        fused=flags["fuse"],
        optimized=optimized,
    )
