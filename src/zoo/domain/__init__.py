"""Pure values and contracts: no torch.nn modules, no I/O, no global state."""

from __future__ import annotations

from zoo.domain.errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    ChecksumMismatchError,
    DownloadError,
    DuplicateModelError,
    ExportFailedError,
    FeatureNotAvailableError,
    InvalidArgumentError,
    InvalidFeatureRequestError,
    InvalidValueError,
    PruneSpecError,
    UnknownModelError,
    WeightsError,
    WeightsUnavailableError,
    ZooError,
)
from zoo.domain.prune import PruneSpec, parse_prune_spec
from zoo.domain.values import (
    FEATURE_CLASSES,
    BuildRequest,
    DefaultCfg,
    FeatureCfg,
    FeatureInfo,
    ModelSpec,
)

__all__ = [
    "FEATURE_CLASSES",
    "BuildRequest",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "ChecksumMismatchError",
    "DefaultCfg",
    "DownloadError",
    "DuplicateModelError",
    "ExportFailedError",
    "FeatureCfg",
    "FeatureInfo",
    "FeatureNotAvailableError",
    "InvalidArgumentError",
    "InvalidFeatureRequestError",
    "InvalidValueError",
    "ModelSpec",
    "PruneSpec",
    "PruneSpecError",
    "UnknownModelError",
    "WeightsError",
    "WeightsUnavailableError",
    "ZooError",
    "parse_prune_spec",
]
