"""Pure values and contracts: no torch.nn modules, no I/O, no global state."""

from __future__ import annotations

from zoo.domain.errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    ChecksumMismatchError,
    DownloadError,
    DuplicateModelError,
    FeatureNotAvailableError,
    HubAccessError,
    HubFileNotFoundError,
    HubRepoNotFoundError,
    InvalidArgumentError,
    InvalidFeatureRequestError,
    InvalidValueError,
    PruneSpecError,
    SavedModelError,
    UnknownModelError,
    WeightsError,
    WeightsUnavailableError,
    ZooError,
)
from zoo.domain.prune import PruneSpec, parse_prune_spec
from zoo.domain.values import (
    FEATURE_CLASSES,
    BuildRecord,
    BuildRequest,
    DefaultCfg,
    FeatureCfg,
    FeatureInfo,
    ModelSpec,
)

__all__ = [
    "FEATURE_CLASSES",
    "BuildRecord",
    "BuildRequest",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "ChecksumMismatchError",
    "DefaultCfg",
    "DownloadError",
    "DuplicateModelError",
    "FeatureCfg",
    "FeatureInfo",
    "FeatureNotAvailableError",
    "HubAccessError",
    "HubFileNotFoundError",
    "HubRepoNotFoundError",
    "InvalidArgumentError",
    "InvalidFeatureRequestError",
    "InvalidValueError",
    "ModelSpec",
    "PruneSpec",
    "PruneSpecError",
    "SavedModelError",
    "UnknownModelError",
    "WeightsError",
    "WeightsUnavailableError",
    "ZooError",
    "parse_prune_spec",
]
