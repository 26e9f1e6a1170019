"""What the commands share: messages on stderr, output files checked up front, models with named weights."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn, TypeAlias, overload

from zoo import api
from zoo.domain.errors import InvalidValueError, WeightsUnavailableError, ZooError

if TYPE_CHECKING:
    from zoo import FeatureExtractor, ZooModule
    from zoo.inference import OptimizedModel

# the largest image side the commands that run a model accept: a 4096x4096 batch of one is already seconds
# to minutes of CPU, and a drawn 10**9 must be refused before torch tries to allocate it
MAX_IMAGE_SIDE = 4096

DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda where available, else cpu)"
OPTIMIZE_HELP = (
    "run zoo.optimize_for_inference's copy: norms folded, layers fused with their activations, the device's "
    "native low precision and layout"
)


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the usage itself is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        """Exit with status 2 and the message, on one line."""
        command = self.prog.removeprefix("zoo").strip()  # "predict" in `zoo predict`, "" for `zoo` itself
        where = f"{command}: " if command else ""
        self.exit(2, f"zoo: error: {where}{one_line(message)} (see `{self.prog} --help`)\n")


Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


def one_line(text: object) -> str:
    """text on one line: its non-empty lines joined with ' / '."""
    return " / ".join(line.strip() for line in str(text).splitlines() if line.strip())


def say(kind: str, message: object) -> None:
    """One line on stderr, `zoo: KIND: message`; a closed stderr is no reason to fail."""
    with contextlib.suppress(OSError, ValueError):  # closed or broken stderr: there is nowhere left to say it
        print(f"zoo: {kind}: {one_line(message)}", file=sys.stderr, flush=True)


def _count_params(model: object) -> int:
    from torch import nn

    assert isinstance(model, nn.Module)
    return sum(p.numel() for p in model.parameters())


def check_out(flag: str, value: str) -> Path:
    """The file path value, if a file can be written there; else InvalidValueError saying why. Nothing is left behind.

    Checked before any work: a command must not spend minutes on a result it cannot write.
    """
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user of a user that does not exist: the path as typed, which then has no folder
        path = Path(value)
    folder = path.parent
    try:
        if not value.strip():
            reason = "it is empty"
        elif "\0" in value:
            reason = "a path cannot hold a NUL character"
        elif path.is_dir():
            reason = "it is a folder; expected a file path"
        elif not folder.is_dir():
            reason = f"its folder {str(folder)!r} does not exist"
        elif path.exists():
            with path.open("r+b"):  # opened for writing, not truncated: what is there stays until the result is
                reason = ""
        else:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".zoo-write-check-")
            os.close(fd)
            os.unlink(probe)
            reason = ""
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        reason = f"it cannot be written ({e.strerror if isinstance(e, OSError) and e.strerror else e})"
    if reason:
        raise InvalidValueError(f"{flag} {value!r} is invalid: {reason}")
    return path


@overload
def create_named(
    name: str, *, checkpoint: str | None, features_only: Literal[False] = False
) -> tuple[ZooModule, str]: ...


@overload
def create_named(
    name: str, *, checkpoint: str | None, features_only: Literal[True]
) -> tuple[FeatureExtractor, str]: ...


def create_named(
    name: str, *, checkpoint: str | None, features_only: bool = False
) -> tuple[ZooModule | FeatureExtractor, str]:
    """The model name names, with the weights it names, and what those weights are (for the output).

    --checkpoint wins; a NAME.TAG or a local-dir:/hf-hub: name loads its weights; a bare NAME has random
    weights. Random weights, chosen or because the named ones cannot be had (offline, not cached), are said
    on stderr: an artefact of a random model must never pass for a trained one.
    """
    from zoo.describe import names_weights

    if checkpoint is not None:
        model = api.create_model(name, checkpoint_path=checkpoint, features_only=features_only)
        return model, f"checkpoint {checkpoint}"
    if not names_weights(name):
        say(
            "warning",
            f"{name} has RANDOM weights: a bare name names an architecture; name its weights "
            f"(NAME.TAG, see `zoo list {name} --tags`) or pass --checkpoint",
        )
        return api.create_model(name, features_only=features_only), "random (untrained)"
    try:
        model = api.create_model(name, pretrained=True, features_only=features_only)
    except WeightsUnavailableError as e:
        unavailable = e
    else:
        return model, f"{name}'s weights"
    try:
        model = api.create_model(name, features_only=features_only)
    except ZooError:  # not even the layout can be had (an hf-hub: name's config.json): the weights are the error
        raise unavailable from None
    say("warning", f"{name}'s weights are not available, so its weights are RANDOM: {unavailable}")
    return model, "random (the named weights are not available)"


def optimized(model: ZooModule, args: argparse.Namespace) -> OptimizedModel:
    """--optimize: model's inference copy on --device (its own precision and layout, so not with --amp or
    --channels-last), its choices said on stderr."""
    from zoo.devices import resolve_device

    asked = (("--amp", getattr(args, "amp", None)), ("--channels-last", getattr(args, "channels_last", False)))
    given = [flag for flag, on in asked if on]
    if given:
        raise InvalidValueError(f"--optimize with {' and '.join(given)} is invalid: --optimize chooses them itself")
    copy = api.optimize_for_inference(model.to(resolve_device(args.device)), check=False)
    say("note", f"optimised: {copy.plan.summary()} ({copy.plan.dtype}: {copy.plan.dtype_reason})")
    return copy
