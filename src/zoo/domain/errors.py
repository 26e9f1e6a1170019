"""The errors a user of zoo can cause: every one is a ZooError."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class ZooError(Exception):
    """Base class of every error zoo raises for something a caller did or asked for."""


class InvalidValueError(ZooError, ValueError):
    """A value (a config field, an argument) is outside what is allowed."""


class InvalidArgumentError(ZooError, TypeError):
    """A keyword argument the target does not accept."""


class UnknownModelError(ZooError, LookupError):
    """A model name (or name.tag) that is not registered."""

    def __init__(self, name: str, known: Iterable[str], what: str = "model", *, list_all: bool = False) -> None:
        """known: the valid names; list_all names every one of them (a name's few tags), else the close matches
        and, for a model, where the full list is (a catalogue is too long to print)."""
        self.name = name
        valid = list(known)
        self.suggestions = tuple(difflib.get_close_matches(name, valid, n=3, cutoff=0.6))
        hints = [f"did you mean {', '.join(map(repr, self.suggestions))}"] if self.suggestions else []
        if list_all:
            hints.append(f"valid {what}s: {', '.join(valid)}")
        elif what == "model":
            hints.append("zoo.list_models() lists the registered names")
        hint = "".join(f"; {h}" for h in hints)
        super().__init__(f"unknown {what} {name!r}{hint}")

    def __str__(self) -> str:
        # LookupError/KeyError-style repr quoting would hide the message; keep it plain.
        return str(self.args[0])


class DuplicateModelError(ZooError, ValueError):
    """A model name registered twice without replace=True."""


class InvalidFeatureRequestError(ZooError, ValueError):
    """A features_only request (out_indices, feature_cls) the model cannot serve."""


class FeatureNotAvailableError(ZooError, NotImplementedError):
    """An option whose service is not part of this zoo (yet)."""


class ModelSurfaceError(FeatureNotAvailableError):
    """A model without members of the model surface an operation needs (a registered plain nn.Module, say).

    missing names the members (zoo.domain.protocols lists them by capability); the message says which
    operation needed them.
    """

    def __init__(self, message: str, *, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.missing = tuple(missing)


class WeightsError(ZooError):
    """Pretrained weights could not be found, read or applied."""


class WeightsUnavailableError(WeightsError, LookupError):
    """No source for the weights (no url/hub id/file, or offline with an empty cache)."""


class HubRepoNotFoundError(WeightsUnavailableError):
    """A hub repo (or revision) that does not exist, or is private to an account the token is not for."""


class HubFileNotFoundError(WeightsUnavailableError):
    """A hub repo that exists but has no such file."""


class HubAccessError(WeightsUnavailableError):
    """A hub repo that refused access: gated, or the token was rejected."""


class DownloadError(WeightsError):
    """A download that started but did not complete (connection closed or timed out mid-body)."""


class ChecksumMismatchError(WeightsError):
    """A downloaded or cached file whose sha256 differs from the expected one."""


class CheckpointFormatError(WeightsError):
    """A file that is not a readable checkpoint (corrupt, truncated, unsafe pickle)."""


class CheckpointMismatchError(WeightsError):
    """A checkpoint whose keys or shapes do not fit the model."""

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        # every key, not just the ten the message shows, for callers that want to act on them
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.mismatched = tuple(mismatched)


class PruneSpecError(ZooError, ValueError):
    """A prune spec that is malformed or does not fit the model."""


class SavedModelError(ZooError, ValueError):
    """A saved model directory or hub repo (config.json + weights) that cannot be read or written."""


class FeatureSurfaceError(ModelSurfaceError, InvalidFeatureRequestError):
    """A features_only request on a model without the taps (or forward_intermediates) it needs."""


class SaveSurfaceError(ModelSurfaceError, SavedModelError):
    """save_pretrained on a model without the classifier head config.json describes."""


class ExportFailedError(ZooError, RuntimeError):
    """torch.export (or the ONNX translation after it) could not capture a model as a graph."""


class DeviceUnavailableError(ZooError, ValueError):
    """A device that is not there (cuda without a GPU, cuda:3 on a machine with one), or not a device at all."""


class DatasetError(ZooError, ValueError):
    """An image folder that cannot be validated on: no classes, no images, or classes that map to no model class."""
