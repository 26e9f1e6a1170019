"""ZooModule: the surface every architecture exposes, as a base class a type checker can see."""

from __future__ import annotations

import torch
from torch import nn

from zoo.domain.values import DefaultCfg, FeatureInfo


class ZooModule(nn.Module):
    """An image classifier with zoo's model surface; subclasses implement the four methods."""

    num_classes: int
    num_features: int
    feature_info: list[FeatureInfo]
    # set by the Builder: the cfg describing the model as built
    default_cfg: DefaultCfg
    pretrained_cfg: DefaultCfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled final feature map (or token sequence)."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify forward_features' output; pre_logits stops before the classifier."""
        raise NotImplementedError

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one (0 removes it); optionally change the pooling."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        """The classifier module (Identity when num_classes is 0)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # typed wrapper: nn.Module.__call__ (hooks included) returns Any
        out: torch.Tensor = super().__call__(x)
        return out
