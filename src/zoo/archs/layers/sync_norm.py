"""Synchronised batch norm for data-parallel training: every batch norm of a model, activations kept.

torch's own converter (nn.SyncBatchNorm.convert_sync_batchnorm) turns a fused norm + activation
module into a bare SyncBatchNorm, whose forward never calls the activation it inherited as a child;
convert_sync_batchnorm here keeps it. The replacements synchronise through torch.distributed
collectives on any device, so a CPU job (gloo) runs the same code as a GPU one (NCCL); nn.SyncBatchNorm
syncs only accelerator tensors, and DDP refuses it in a CPU module.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd.function import FunctionCtx

from zoo.archs.layers.norm_act import BatchNormAct2d, InPlaceAbn2d
from zoo.domain.errors import InvalidArgumentError, InvalidValueError

__all__ = ["SyncBatchNormAct", "SyncInPlaceAbn", "convert_sync_batchnorm"]

M = TypeVar("M", bound=nn.Module)

# torch's own batch norms, converted as they are (their forward is the plain batch norm one)
_PLAIN_NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# a replaced module's hooks move to its replacement (a hook feature extractor reads taps on norm modules);
# the dicts themselves move, so the handles that registered them still remove them
_HOOK_ATTRS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_is_full_backward_hook",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


class _GatherOverRanks(torch.autograd.Function):
    """all_gather as a stacked tensor; the gradient of a rank's slice is summed over every rank's loss."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group  # type: ignore[attr-defined]  # FunctionCtx carries what backward needs as attributes
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        group = ctx.group  # type: ignore[attr-defined]  # set in forward
        summed = grad.contiguous().clone()
        dist.all_reduce(summed, group=group)
        return summed[dist.get_rank(group)], None


def _gather_over_ranks(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    out: torch.Tensor = _GatherOverRanks.apply(x, group)
    return out


class SyncBatchNormAct(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover the batches of every rank, then an activation (`act`).

    One code path on every device and backend: each rank's count, mean and spread are gathered over the
    process group (one all_gather forward, one all_reduce backward). Not an nn.SyncBatchNorm, which syncs only CUDA
    tensors and which DDP refuses on CPU. Without a process group, or in eval, it is a plain batch norm.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: dist.ProcessGroup | None = None,
        *,
        act: nn.Module | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group
        self.act: nn.Module = nn.Identity() if act is None else act

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise InvalidValueError(
                f"input of shape {tuple(input.shape)} is invalid for batch norm: expected (N, C, ...), 2 or more dims"
            )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Batch norm (statistics over every rank's batch in training), then the activation."""
        if self.training and dist.is_available() and dist.is_initialized():
            x = self._forward_synced(input)
        else:
            x = super().forward(input)
        out: torch.Tensor = self.act(x)
        return out

    def _forward_synced(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        assert group is not None  # dist is initialised, so the default group exists
        dims = [0, *range(2, x.dim())]
        c = x.size(1)
        n = x.numel() // max(1, c)
        stat_dtype = torch.promote_types(x.dtype, torch.float32)
        if n > 0:
            var_here, mean_here = torch.var_mean(x.to(stat_dtype), dim=dims, correction=0)
        else:  # this rank has no values; the others' still set the statistics
            var_here = mean_here = x.new_zeros(c, dtype=stat_dtype)
        count = torch.full((1,), float(n), dtype=stat_dtype, device=x.device)
        # every rank's (mean, spread, count), combined about the global mean: nothing large cancels
        ranks = _gather_over_ranks(torch.cat([mean_here, var_here, count]), group)
        means, variances, counts = ranks[:, :c], ranks[:, c : 2 * c], ranks[:, 2 * c :]
        total = float(counts.detach().sum())
        if total <= 1:
            raise InvalidValueError(
                f"batch norm in training needs more than 1 value per channel over all ranks, got {total:g} "
                f"(input shape {tuple(x.shape)} on this rank): use a larger batch or eval mode"
            )
        mean = (counts * means).sum(0) / total
        var = (counts * (variances + (means - mean).square())).sum(0) / total
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                factor = self._update_factor()
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                unbiased = var * (total / (total - 1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        shape = [1, -1] + [1] * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps)
        shift = mean
        if self.weight is not None and self.bias is not None:
            scale = scale * self.weight
            shift = shift * scale - self.bias
        else:
            shift = shift * scale
        y = x.to(stat_dtype) * scale.view(shape) - shift.view(shape)
        return y.to(x.dtype)

    def _update_factor(self) -> float:
        # the batch norms' rule: the momentum, or a cumulative average when momentum is None
        tracked = self.num_batches_tracked
        if tracked is not None:
            tracked.add_(1)
        if self.momentum is None:
            return 1.0 / float(tracked) if tracked is not None else 0.0
        return float(self.momentum)


class SyncInPlaceAbn(SyncBatchNormAct):
    """The synchronised form of InPlaceAbn2d: its state_dict has InPlaceAbn2d's keys (no num_batches_tracked)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        process_group: dist.ProcessGroup | None = None,
        *,
        act: nn.Module | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, True, True, process_group, act=act, device=device)
        # the batch norm base counts batches in training, so the counter stays, but unsaved as in InPlaceAbn2d
        counter = self.num_batches_tracked
        del self.num_batches_tracked
        self.register_buffer("num_batches_tracked", counter, persistent=False)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, object],
        prefix: str,
        local_metadata: dict[str, object],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # skips the batch norms' upgrade of old checkpoints, which would add the counter key this module does not save
        nn.Module._load_from_state_dict(
            self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def _synced(module: nn.Module, process_group: dist.ProcessGroup | None) -> nn.Module | None:
    """The synchronised replacement of a norm module, or None for a module that is not one."""
    if isinstance(module, (SyncBatchNormAct, nn.SyncBatchNorm)):
        return None  # synchronised already
    if type(module) is InPlaceAbn2d:
        iabn = SyncInPlaceAbn(
            module.num_features, module.eps, module.momentum, process_group, act=module.act, device="meta"
        )
        iabn.weight, iabn.bias = module.weight, module.bias
        iabn.running_mean, iabn.running_var = module.running_mean, module.running_var
        iabn.num_batches_tracked = torch.zeros((), dtype=torch.long, device=module.running_mean.device)
        return _takes_over(iabn, module)
    if type(module) is BatchNormAct2d or type(module) in _PLAIN_NORMS:
        assert isinstance(module, nn.modules.batchnorm._BatchNorm)
        act = module.act if isinstance(module, BatchNormAct2d) else None
        bn = SyncBatchNormAct(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            process_group,
            act=act,
            device="meta",
        )
        bn.weight, bn.bias = module.weight, module.bias
        bn.running_mean, bn.running_var = module.running_mean, module.running_var
        bn.num_batches_tracked = module.num_batches_tracked
        return _takes_over(bn, module)
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, InPlaceAbn2d)):
        warnings.warn(
            f"convert_sync_batchnorm left a {type(module).__qualname__} as it is: its forward is its own, and a "
            "synchronised replacement could change what it computes; its statistics stay per process",
            stacklevel=4,  # the caller of zoo.convert_sync_batchnorm
        )
    return None


def _takes_over(new: SyncBatchNormAct, old: nn.Module) -> SyncBatchNormAct:
    new.train(old.training)
    for attr in _HOOK_ATTRS:
        object.__setattr__(new, attr, getattr(old, attr))
    return new


def convert_sync_batchnorm(model: M, process_group: dist.ProcessGroup | None = None) -> M:
    """Replace every batch norm in model, in place, by one synchronised over process_group (default: all ranks).

    Fused norm + activation modules keep their activation; parameters and buffers are the same tensors,
    state_dict keys do not change, and eval outputs stay the same. Returns model.
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model={model!r} is invalid: expected a torch.nn.Module")
    if process_group is not None and not isinstance(process_group, dist.ProcessGroup):
        raise InvalidArgumentError(f"process_group={process_group!r} is invalid: expected a ProcessGroup or None")
    if isinstance(model, (nn.modules.batchnorm._BatchNorm, InPlaceAbn2d)):
        raise InvalidArgumentError(
            f"model is a bare {type(model).__qualname__}: convert_sync_batchnorm replaces the norms inside a "
            "model; build a SyncBatchNormAct for a single layer"
        )
    # every replacement is built before any is put in, so a failure leaves the model as it was
    replacements: dict[int, nn.Module | None] = {}
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in model.modules():
        # every slot, not named_children(): that skips a second slot holding a module it has already seen
        for name, child in parent._modules.items():
            if child is None:
                continue
            if id(child) not in replacements:  # a module shared by two parents gets one replacement
                replacements[id(child)] = _synced(child, process_group)
            new = replacements[id(child)]
            if new is not None:
                swaps.append((parent, name, new))
    for parent, name, new in swaps:
        setattr(parent, name, new)
    return model
