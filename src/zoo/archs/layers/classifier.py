"""Classifier heads: validation of a head's arguments, the linear layer, and a pool-drop-fc head module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers.pool import POOL_TYPES, GlobalPool
from zoo.domain.checks import check_int
from zoo.domain.errors import InvalidValueError

__all__ = ["ClassifierHead", "check_head", "make_fc"]


def check_head(num_classes: int, global_pool: str) -> None:
    """A linear classifier needs pooled input: refuse num_classes > 0 with global_pool=''."""
    check_int("num_classes", num_classes, ge=0)
    if global_pool == "" and num_classes > 0:
        raise InvalidValueError(
            f"global_pool='' (no pooling) needs num_classes=0, got num_classes={num_classes}; "
            f"use one of {POOL_TYPES[:-1]} to keep a classifier"
        )


def make_fc(in_features: int, num_classes: int) -> nn.Module:
    """The linear classifier, or Identity when num_classes is 0."""
    if num_classes == 0:
        return nn.Identity()
    return nn.Linear(in_features, num_classes)


class ClassifierHead(nn.Module):
    """Global pooling, dropout and a linear classifier (parameters under `fc`).

    Models replace the whole head to change it, never edit one in place: feature extractors share
    a model's modules, so an in-place change would reach the model they were made from.
    """

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0) -> None:
        super().__init__()
        check_head(num_classes, pool_type)
        self.in_features = in_features
        self.drop_rate = drop_rate
        self.global_pool = GlobalPool(pool_type)
        self.fc = make_fc(in_features * self.global_pool.feat_mult(), num_classes)

    @property
    def num_features(self) -> int:
        """The width entering the classifier (pooled features)."""
        return self.in_features * self.global_pool.feat_mult()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        if pre_logits:
            return x
        out: torch.Tensor = self.fc(x)
        return out
