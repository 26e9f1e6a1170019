"""Deployment artefacts: a model (classifier or feature extractor) as a torch.export program, a .pt2 file or ONNX.

The batch dimension is always dynamic; height and width are dynamic where the architecture allows
(a convolutional network does, a model with fixed position embeddings does not), from twice the
model's deepest stride up, so that no feature map in the program collapses to 1x1 (torch.export
specialises sizes 0 and 1).
"""

from __future__ import annotations

import functools
import importlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim, ExportedProgram

from zoo.domain.checks import check_choice, check_int
from zoo.domain.errors import ExportFailedError, FeatureNotAvailableError, InvalidValueError, ZooError
from zoo.domain.protocols import Configured, Tapped
from zoo.domain.values import DefaultCfg
from zoo.services.files import PART, replace_together

ONNX_INLINE_LIMIT = 2**31 - 2**26  # weights' bytes past which save_onnx writes them beside the model file

__all__ = [
    "EXPORT_FORMATS",
    "MAX_OPSET",
    "MIN_OPSET",
    "check_export_args",
    "export_file",
    "export_program",
    "input_dims",
    "min_dynamic_size",
    "save_onnx",
    "save_program",
]

EXPORT_FORMATS = ("onnx", "pt2")
# the dynamo ONNX exporter translates through torchlib, written against opset 18; 23 is the newest torch 2.14 emits
MIN_OPSET = 18
MAX_OPSET = 23
_ONNX_MODULES = ("onnx", "onnxscript")


def min_dynamic_size(model: nn.Module) -> int:
    """The smallest height/width a program exported from model accepts: twice the stride of its deepest map.

    At that size the deepest feature map is 2x2; torch.export specialises a size of 1 (a 1x1 map),
    so a range reaching it would not hold. The deepest map is the deepest tap's, or deeper where a module
    says it makes one (its int attribute deepest_reduction: an attention block's strided keys and values,
    which a model cut at an earlier tap still runs). Without feature_info, 64.
    """
    if not isinstance(model, Tapped):
        return 64
    # a feature extractor's FeatureTaps iterates over the selected taps only; a classifier's list, every tap
    reductions = [int(t.reduction) for t in model.feature_info]
    inner = [r for m in model.modules() if isinstance(r := getattr(m, "deepest_reduction", None), int)]
    return 2 * max(reductions + inner, default=32)


def export_program(
    model: nn.Module,
    example: torch.Tensor,
    *,
    dynamic_size: bool | None = None,
) -> ExportedProgram:
    """model (in its current train/eval mode) captured by torch.export, with a dynamic batch dimension.

    dynamic_size: True makes height and width dynamic (from min_dynamic_size(model) up); False keeps the
    example's; None (the default) tries dynamic and falls back to the example's size with a warning where
    torch.export refuses. A size condition torch cannot prove from the ranges (the output-size check of
    ceil-mode pooling, true at every size; or a size the model really fixes) is kept as a runtime check
    in the program: it raises when the program runs at a size that fails it.
    """
    if not isinstance(example, torch.Tensor) or example.ndim != 4:
        raise InvalidValueError(f"example={_describe(example)} is invalid: expected an image batch, a 4-d tensor")
    check_int("example batch size", example.shape[0], ge=2)  # torch.export specialises a batch of 1
    low = min_dynamic_size(model)
    if dynamic_size is False:
        return _export(model, example, dynamic_size=False, low=low)
    if any(d < low for d in example.shape[2:]):
        if dynamic_size:
            raise InvalidValueError(
                f"example of shape {tuple(example.shape)} is invalid for a dynamic height/width: expected both "
                f">= {low} (twice {type(model).__name__}'s deepest stride)"
            )
        reason = f"a dynamic height/width needs an example of at least {low}x{low}"
    else:
        try:
            return _export(model, example, dynamic_size=True, low=low)
        except ExportFailedError as e:
            if dynamic_size:
                raise
            reason = str(e)
    program = _export(model, example, dynamic_size=False, low=low)
    warnings.warn(
        f"{type(model).__name__} exported with a fixed height/width of {tuple(example.shape[2:])}: {reason}",
        stacklevel=2,
    )
    return program


def _export(model: nn.Module, example: torch.Tensor, *, dynamic_size: bool, low: int) -> ExportedProgram:
    dims: dict[int, Dim] = {0: Dim("batch", min=1)}
    if dynamic_size:
        dims[2] = Dim("height", min=low)
        dims[3] = Dim("width", min=low)
    try:
        # Guards torch cannot prove from the ranges alone (ceil-mode pooling's output-size check, which
        # holds at every size) become runtime asserts in the program instead of export errors.
        return torch.export.export(
            model, (example,), dynamic_shapes=(dims,), prefer_deferred_runtime_asserts_over_guards=True
        )
    except (RuntimeError, ValueError, TypeError, AssertionError, NotImplementedError) as e:
        if isinstance(e, ZooError):
            raise
        size = "dynamic batch, height and width" if dynamic_size else "dynamic batch"
        raise ExportFailedError(
            f"{type(model).__name__} could not be exported with a {size} from an example of shape "
            f"{tuple(example.shape)}: {type(e).__name__}: {_first_lines(str(e))}"
        ) from e


def save_program(program: ExportedProgram, out: str | os.PathLike[str]) -> Path:
    """Write program as a .pt2 archive (read back with torch.export.load), whatever out's file name ends in.

    Written beside out under a temporary .pt2 name and renamed into place: out is whole or untouched.
    """
    import uuid

    path = _writable(out)
    # created by torch.export.save itself, so with the permissions any new file gets (mkstemp's are 0600)
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.pt2")
    try:
        torch.export.save(program, staged)
        os.replace(staged, path)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)
    return path


def save_onnx(program: ExportedProgram, out: str | os.PathLike[str], *, opset: int | None = None) -> Path:
    """Translate program to ONNX with torch's dynamo exporter and write it as one file (needs zoo[onnx])."""
    if opset is not None:
        opset = check_int("opset", opset, ge=MIN_OPSET, le=MAX_OPSET)
    _require_onnx()
    path = _writable(out)
    params = sum(t.numel() * t.element_size() for t in program.state_dict.values())
    with warnings.catch_warnings():
        # the exporter reports its own progress through warnings and prints; the caller gets the file
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program, (), dynamo=True, opset_version=opset, optimize=True, verbose=False, external_data=False
        )
    if onnx_program is None:  # pragma: no cover - dynamo=True always returns the program
        raise ExportFailedError("torch.onnx.export returned no program")
    # one self-contained file up to protobuf's 2 GiB limit; past it the weights go beside it, as ONNX requires.
    # Saved under its own name in a temp folder beside out (the model file names its weights file), then
    # moved into place together: out and its weights file are both the new ones, or both untouched.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.", suffix=PART) as staging:
        onnx_program.save(Path(staging) / path.name, external_data=params >= ONNX_INLINE_LIMIT)
        written = sorted(Path(staging).iterdir())
        replace_together(path.parent, [(f.name, functools.partial(_move, f)) for f in written])
    return path


def _move(src: Path, dest: Path) -> None:
    os.replace(src, dest)  # the same folder's file system: a rename, not a copy


def export_file(
    model: nn.Module,
    out: str | os.PathLike[str],
    *,
    fmt: str,
    opset: int | None = None,
    example: torch.Tensor | None = None,
) -> tuple[Path, ExportedProgram]:
    """Export model in eval mode to out as fmt ('onnx' or 'pt2'); the example defaults to 2 images of its cfg's size.

    Every argument is checked before any work, and nothing is written unless the export succeeds. The
    model is left in the train/eval mode it had (every module's), whether or not the export succeeds.
    """
    fmt, opset = check_export_args(out, fmt=fmt, opset=opset)
    if example is None:
        cfg = model.default_cfg if isinstance(model, Configured) else None
        size = cfg.input_size if isinstance(cfg, DefaultCfg) else None  # not a cfg zoo made: no size to trust
        if not (isinstance(size, tuple) and len(size) == 3):
            raise InvalidValueError(
                f"{type(model).__name__} has no default_cfg.input_size to make an example from: pass example="
            )
        example = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
        device = next((p.device for p in model.parameters()), None)
        if device is not None:  # the example goes where the model is (an export on a GPU)
            example = example.to(device)
    # each module's own flag, as the caller left it: a model partly in eval (frozen norms) gets that back
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        program = export_program(model, example)
        path = save_onnx(program, out, opset=opset) if fmt == "onnx" else save_program(program, out)
    finally:
        for m, training in modes:
            m.training = training  # the flag itself: train() may be overridden to warn or to do more
    return path, program


def check_export_args(out: str | os.PathLike[str], *, fmt: str, opset: int | None = None) -> tuple[str, int | None]:
    """export_file's checks of its arguments, for a caller to run before it builds the model: the format,
    the opset, the ONNX packages, and that a file can be written at out (probed: nothing is left behind).
    Returns fmt and opset, checked."""
    fmt = str(check_choice("format", fmt, EXPORT_FORMATS))
    if opset is not None:
        if fmt != "onnx":
            raise InvalidValueError(f"opset={opset!r} is invalid for format {fmt!r}: an opset applies to 'onnx' only")
        opset = check_int("opset", opset, ge=MIN_OPSET, le=MAX_OPSET)
    if fmt == "onnx":
        _require_onnx()
    _probe_writable(_writable(out))
    return fmt, opset


def input_dims(program: ExportedProgram) -> list[tuple[str, int, int | None]]:
    """(name, least, greatest or None for unbounded) per dimension of the program's image input."""
    names = ("batch", "channels", "height", "width")
    (image,) = [
        node.meta["val"]
        for node in program.graph.find_nodes(op="placeholder")
        if node.name in program.graph_signature.user_inputs
    ]
    dims: list[tuple[str, int, int | None]] = []
    for name, d in zip(names, image.shape, strict=True):
        if isinstance(d, torch.SymInt):
            bounds = program.range_constraints[d.node.expr]
            # torch's "no bound" (int_oo) is a sympy Number but not an Integer
            upper = int(bounds.upper) if bounds.upper.is_Integer else None
            dims.append((name, int(bounds.lower), upper))
        else:
            dims.append((name, int(d), int(d)))
    return dims


def _require_onnx() -> None:
    missing = [m for m in _ONNX_MODULES if not _importable(m)]
    if missing:
        raise FeatureNotAvailableError(
            f"ONNX export needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            "pip install zoo[onnx]"
        )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _writable(out: str | os.PathLike[str]) -> Path:
    if not isinstance(out, (str, os.PathLike)):
        raise InvalidValueError(f"out={out!r} is invalid: expected a file path (str or os.PathLike)")
    path = Path(out)
    if not os.fspath(path).strip() or os.fspath(path) == ".":
        raise InvalidValueError(f"out={out!r} is invalid: expected a file path")
    if "\0" in os.fspath(path):
        raise InvalidValueError(f"out={str(out)!r} is invalid: a path cannot hold a NUL character")
    if not path.parent.is_dir():
        raise InvalidValueError(f"out={str(out)!r} is invalid: its folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise InvalidValueError(f"out={str(out)!r} is invalid: it is a folder, expected a file path")
    if path.exists() and not path.is_file():  # a device or a pipe: an archive is written whole, then renamed
        raise InvalidValueError(f"out={str(out)!r} is invalid: it is not a regular file, expected a file path")
    return path


def _probe_writable(path: Path) -> None:
    """InvalidValueError unless a file can be written at path; an existing file is opened, not truncated."""
    import tempfile

    try:
        if path.exists():
            with path.open("r+b"):
                pass
        else:
            fd, probe = tempfile.mkstemp(dir=path.parent, prefix=".zoo-write-check-")
            os.close(fd)
            os.unlink(probe)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InvalidValueError(f"out={str(path)!r} is invalid: it cannot be written ({reason})") from None


def _describe(value: object) -> str:
    return f"tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)


def _first_lines(text: str, n: int = 3) -> str:
    lines: Sequence[str] = [line for line in text.splitlines() if line.strip()]
    return " / ".join(lines[:n])
