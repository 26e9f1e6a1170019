"""A classifier head that pools first, then normalises: pool, LayerNorm, optional hidden layer, dropout, linear."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from zoo.archs.layers.classifier import check_head, make_fc
from zoo.archs.layers.norm import LayerNorm2d
from zoo.archs.layers.pool import GlobalPool, spatial_mean
from zoo.domain.checks import check_int
from zoo.domain.errors import InvalidValueError

__all__ = ["NormMlpClassifierHead"]


class NormMlpClassifierHead(nn.Module):
    """Global pooling, a channel LayerNorm (`norm`), an optional linear + GELU (`pre_logits.fc`), dropout, `fc`.

    With 'catavgmax' the average- and max-pooled features are normalised each on its own, then
    concatenated (twice the width); with '' the map is normalised at every position and not pooled
    (then num_classes must be 0) and the hidden layer applies at every position. Models replace the
    whole head to change it, never edit it in place.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pool_type: str = "avg",
        drop_rate: float = 0.0,
        *,
        hidden_size: int | None = None,
        eps: float = 1e-6,
        norm: nn.Module | None = None,
        pre_logits: nn.Module | None = None,
    ) -> None:
        super().__init__()
        check_head(num_classes, pool_type)
        self.global_pool = GlobalPool(pool_type, flatten=False)
        mult = self.global_pool.feat_mult()
        if hidden_size is not None:
            hidden_size = check_int("head_hidden_size", hidden_size, ge=1)
            if mult != 1:
                raise InvalidValueError(
                    f"global_pool={pool_type!r} is invalid with a hidden head layer (head_hidden_size={hidden_size}): "
                    "expected one that keeps the width ('avg', 'max', 'avgmax' or '')"
                )
        self.pool_type = pool_type
        self.in_features = in_features
        self.drop_rate = drop_rate
        self.hidden_size = hidden_size
        # handed in by a reset, so the new head keeps the trained norm and hidden layer
        self.norm: nn.Module = norm if norm is not None else LayerNorm2d(in_features, eps=eps)
        if pre_logits is None:
            pre_logits = (
                nn.Sequential(OrderedDict(fc=nn.Linear(in_features, hidden_size), act=nn.GELU()))
                if hidden_size is not None
                else nn.Identity()
            )
        self.pre_logits = pre_logits
        self.num_features = hidden_size if hidden_size is not None else in_features * mult
        self.fc = make_fc(self.num_features, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type == "catavgmax":
            avg = self.norm(spatial_mean(x))
            top = self.norm(x.amax((2, 3), keepdim=True))
            x = torch.cat((avg, top), dim=1)
        else:
            x = self.norm(self.global_pool(x))
        if self.pool_type != "":
            x = self.pre_logits(x.flatten(1))
        else:
            # unpooled: the hidden layer applies at every position
            x = self.pre_logits(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        if pre_logits:
            return x
        out: torch.Tensor = self.fc(x)
        return out
