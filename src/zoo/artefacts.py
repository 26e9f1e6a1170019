"""What a built model can be turned into: a pruned layout derived from its weights, an exported file.

The functions behind `zoo prune` and `zoo export`. zoo.services.export keeps the finer-grained steps
(export_program, save_onnx, save_program) for a program of one's own.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn
    from torch.export import ExportedProgram

    from zoo.domain.prune import PruneSpec

__all__ = ["ExportedModel", "check_export", "derive_prune_spec", "export_model"]


def derive_prune_spec(model: nn.Module, ratio: float) -> tuple[PruneSpec, nn.Module]:
    """Prune a copy of model by ratio, keeping each channel space's largest-L1 channels (residual groups as one).

    Returns the spec (for `create_model(name, prune_spec=spec)` or a spec file: `spec.to_text()`) and the pruned
    copy holding the kept weights; model is not changed. ratio 0 keeps every channel.
    """
    from zoo.services.pruner import ChannelPruner

    return ChannelPruner().derive(model, ratio)


@attrs.frozen(kw_only=True)
class ExportedModel:
    """A model written by export_model: the file, the program, and the (name, least, greatest) of each input dim.

    greatest is None for a dimension without an upper bound (a dynamic batch, height or width).
    """

    path: Path
    program: ExportedProgram = attrs.field(eq=False, repr=False)
    inputs: tuple[tuple[str, int, int | None], ...]


def check_export(out: str | os.PathLike[str], *, fmt: str, opset: int | None = None) -> tuple[str, int | None]:
    """export_model's checks, for a caller to run before it builds the model: the format ('onnx' or 'pt2'),
    the opset (ONNX only), the ONNX packages, and that out can be written (probed: nothing is left behind).

    Returns fmt and opset, checked; a bad one raises a ZooError naming it.
    """
    from zoo.services import export

    return export.check_export_args(out, fmt=fmt, opset=opset)


def export_model(model: nn.Module, out: str | os.PathLike[str], *, fmt: str, opset: int | None = None) -> ExportedModel:
    """Export model in eval mode with a dynamic batch (and height and width where it allows) to out as fmt.

    fmt is 'pt2' (a torch.export archive) or 'onnx' (needs zoo[onnx]); the example is 2 images of the
    model's cfg size. Nothing is written unless the export succeeds; model keeps its train/eval mode.
    """
    from zoo.services import export

    path, program = export.export_file(model, out, fmt=fmt, opset=opset)
    return ExportedModel(path=path, program=program, inputs=tuple(export.input_dims(program)))
