"""Normalisation statistics and eval-crop defaults under the reference's (timm's) names.

Pure values: importing this module imports neither torch nor torchvision. The ImageNet statistics and the
crop defaults are DefaultCfg's own defaults, so that each is written once in zoo.
"""

from __future__ import annotations

from zoo.domain.values import CropMode, DefaultCfg

__all__ = [
    "DEFAULT_CROP_MODE",
    "DEFAULT_CROP_PCT",
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "IMAGENET_DPN_MEAN",
    "IMAGENET_DPN_STD",
    "IMAGENET_INCEPTION_MEAN",
    "IMAGENET_INCEPTION_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
]

_DEFAULT_CFG = DefaultCfg()

DEFAULT_CROP_PCT: float = _DEFAULT_CFG.crop_pct
"""The fraction of each side of the resized image an eval crop keeps when a cfg does not say (0.875)."""
DEFAULT_CROP_MODE: CropMode = _DEFAULT_CFG.crop_mode
"""How an eval crop is taken when a cfg does not say ("center")."""
IMAGENET_DEFAULT_MEAN: tuple[float, ...] = _DEFAULT_CFG.mean
"""Per-channel (RGB) mean of ImageNet-1k images scaled to [0, 1]."""
IMAGENET_DEFAULT_STD: tuple[float, ...] = _DEFAULT_CFG.std
"""Per-channel (RGB) standard deviation of ImageNet-1k images scaled to [0, 1]."""
IMAGENET_INCEPTION_MEAN: tuple[float, ...] = (0.5, 0.5, 0.5)
"""The mean of Inception-style preprocessing (inputs scaled to [-1, 1])."""
IMAGENET_INCEPTION_STD: tuple[float, ...] = (0.5, 0.5, 0.5)
"""The standard deviation of Inception-style preprocessing (inputs scaled to [-1, 1])."""
IMAGENET_DPN_MEAN: tuple[float, ...] = (124 / 255, 117 / 255, 104 / 255)
"""The mean the DPN checkpoints were trained with."""
IMAGENET_DPN_STD: tuple[float, ...] = (1 / (0.0167 * 255),) * 3
"""The standard deviation the DPN checkpoints were trained with."""
OPENAI_CLIP_MEAN: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
"""The mean of OpenAI CLIP's image preprocessing."""
OPENAI_CLIP_STD: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
"""The standard deviation of OpenAI CLIP's image preprocessing."""
