"""Reading checkpoint files: safetensors (memory-mapped) or torch (weights_only), unwrapped to a flat state_dict."""

from __future__ import annotations

import errno
import os
import pickle
import re
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import torch

from zoo.domain.errors import CheckpointFormatError, WeightsError, WeightsUnavailableError

StateDict = dict[str, torch.Tensor]


class CheckpointResourceError(WeightsError):
    """A checkpoint that could not be read for want of a resource (memory, file handles, permission).

    Nothing is known to be wrong with the file's bytes, so it is kept: the same read may succeed
    once the resource is there.
    """


# Training scripts save {"state_dict": ...} or {"model": ...} around the weights.
_WRAPPER_KEYS = ("state_dict", "model")
# DataParallel / DistributedDataParallel prefix every name with this.
_PARALLEL_PREFIX = "module."
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\.\s+Please|\n\n|$)", re.DOTALL)


def read_checkpoint(path: Path, *, origin: str = "") -> StateDict:
    """A flat state_dict from a safetensors or torch checkpoint; origin names the file in errors."""
    origin = origin or str(path)
    check_file(path, origin)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise WeightsUnavailableError(f"checkpoint file {origin} does not exist; pass the path of a file") from None
    except OSError as e:
        raise resource_error(origin, e) from None
    if _looks_like_safetensors(head, size):
        return unwrap(_read_safetensors(path, origin), origin)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTO):
        return unwrap(_read_torch(path, origin, zipped=head.startswith(_ZIP_MAGIC)), origin)
    raise CheckpointFormatError(
        f"{origin} is not a checkpoint zoo can read: expected safetensors or a torch.save file "
        f"(first bytes {head[:8]!r})"
    )


def check_file(path: Path, origin: str) -> None:
    """WeightsUnavailableError unless path is an existing file, saying what is there instead."""
    if path.is_dir():
        raise WeightsUnavailableError(
            f"checkpoint file {origin} is a directory; pass the path of a checkpoint file (e.g. one inside it)"
        )
    if not path.exists():
        raise WeightsUnavailableError(f"checkpoint file {origin} does not exist; pass the path of a file")


def resource_error(origin: str, error: BaseException) -> CheckpointResourceError:
    """The error for a read that failed for a resource reason; the file's bytes are not in question."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return CheckpointResourceError(
        f"{origin} could not be read for a resource reason ({type(error).__name__}: {reason}), not because its "
        "bytes are wrong, so the file was kept; free memory or file handles, or fix its permissions, and retry"
    )


# torch reports a failed mmap or open inside torch.load as a RuntimeError carrying the system's message
_RESOURCE_ERRNOS = (errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EACCES, errno.EPERM, errno.EAGAIN)
_RESOURCE_TEXTS = tuple(os.strerror(code) for code in _RESOURCE_ERRNOS)


def _is_resource_error(error: BaseException) -> bool:
    # any OSError is about the system, not the bytes: format problems come as other exception types
    return isinstance(error, (OSError, MemoryError)) or any(text in str(error) for text in _RESOURCE_TEXTS)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # safetensors: an 8-byte little-endian header length, then a JSON header starting with '{'
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def _read_safetensors(path: Path, origin: str) -> StateDict:
    from safetensors import SafetensorError, safe_open

    try:
        # safe_open maps the file: tensors are views of the page cache, not copies
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118  # safe_open is not a Mapping
    except (SafetensorError, OSError, RuntimeError, ValueError, MemoryError) as e:
        if _is_resource_error(e):
            raise resource_error(origin, e) from None
        raise CheckpointFormatError(f"{origin} is a damaged safetensors file ({e})") from None


def _read_torch(path: Path, origin: str, *, zipped: bool) -> object:
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it does not expect; the load below decides
            warnings.simplefilter("ignore", UserWarning)
            # weights_only=True, always: a pickle that would import and call code is refused unrun.
            # mmap (zip format only) shares the page cache instead of copying every tensor.
            return cast(object, torch.load(path, map_location="cpu", weights_only=True, mmap=zipped))
    except pickle.UnpicklingError as e:
        m = _UNPICKLER_REASON.search(str(e))
        reason = " ".join(m.group(1).split()) if m else str(e).splitlines()[0]
        raise CheckpointFormatError(
            f"{origin}: refused to unpickle it. zoo reads torch checkpoints only with "
            f"torch.load(weights_only=True), which admits tensors and plain containers, and this file "
            f"needs more ({reason}). Convert it to safetensors, or re-save a plain state_dict."
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ValueError, KeyError... for damaged files
        if _is_resource_error(e):
            raise resource_error(origin, e) from None
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointFormatError(f"{origin} is a damaged torch checkpoint ({type(e).__name__}: {first})") from None


def unwrap(obj: object, origin: str) -> StateDict:
    """The flat name -> tensor mapping inside obj: unwraps state_dict/model and strips 'module.'."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointFormatError(
            f"{origin} holds {type(obj).__name__}{' (empty)' if isinstance(obj, Mapping) else ''}; "
            "expected a state_dict (names to tensors), optionally under 'state_dict' or 'model'"
        )
    items = cast(Mapping[object, object], obj)
    bad = [repr(k) for k, v in items.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointFormatError(
            f"{origin}: {len(bad)} entries are not name -> tensor (e.g. {', '.join(bad[:5])}); expected a state_dict"
        )
    tensors = cast(Mapping[str, torch.Tensor], items)
    return {k.removeprefix(_PARALLEL_PREFIX): v for k, v in tensors.items()}
