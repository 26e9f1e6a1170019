"""The device and autocast dtype the commands that run a model take: `--device` and `--amp`, checked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from zoo.domain.checks import check_choice
from zoo.domain.errors import DeviceUnavailableError

if TYPE_CHECKING:
    import torch

__all__ = ["AMP_DTYPES", "AmpDtype", "amp_dtype", "available_devices", "default_device", "resolve_device"]

AmpDtype = Literal["bf16", "fp16"]
AMP_DTYPES: tuple[str, ...] = get_args(AmpDtype)


def available_devices() -> list[str]:
    """The devices this process can run on: cpu, then each cuda device and mps where present."""
    import torch

    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def default_device() -> str:
    """cuda where a GPU is available, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None = None) -> torch.device:
    """device as a torch.device that is there (None: default_device()), else DeviceUnavailableError naming the
    devices that are."""
    import torch

    if device is None:
        device = default_device()
    listed = ", ".join(available_devices())
    if not isinstance(device, str):
        raise DeviceUnavailableError(f"device={device!r} is invalid: expected a device name such as {listed}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceUnavailableError(f"device={device!r} is not a device; available here: {listed}") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise DeviceUnavailableError(f"device={device!r} is not available: no CUDA GPU here; available: {listed}")
        if resolved.index is not None and resolved.index >= count:
            raise DeviceUnavailableError(
                f"device={device!r} is not available: {count} CUDA GPU(s); available: {listed}"
            )
        return resolved
    if resolved.type == "mps" and torch.backends.mps.is_available():
        return resolved
    raise DeviceUnavailableError(f"device={device!r} is not available; available here: {listed}")


def amp_dtype(amp: AmpDtype | None) -> torch.dtype | None:
    """The autocast dtype --amp names (bf16: torch.bfloat16, fp16: torch.float16), None for none."""
    import torch

    if amp is None:
        return None
    check_choice("amp", amp, AMP_DTYPES)
    return torch.bfloat16 if amp == "bf16" else torch.float16
