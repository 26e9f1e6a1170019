"""Inference copies with batch norm folded into the convolution before it."""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Iterable
from typing import TypeVar

import torch
import torch.fx
from torch import nn

from zoo.archs.layers.norm_act import BatchNormAct2d, InPlaceAbn2d
from zoo.archs.layers.sync_norm import SyncBatchNormAct, SyncInPlaceAbn
from zoo.domain.checks import check_bool
from zoo.domain.errors import FeatureNotAvailableError, InvalidValueError

__all__ = ["FoldedNorm", "fuse_for_inference"]

# Norms whose eval forward is exactly F.batch_norm with running statistics, then (for the norm-act
# ones) their `act`. A subclass of these may compute something else, so only these classes fold. The
# synchronised ones (convert_sync_batchnorm's, torch's) sync in training only: in eval they are these.
_FOLDABLE = (nn.BatchNorm2d, BatchNormAct2d, InPlaceAbn2d, SyncBatchNormAct, SyncInPlaceAbn, nn.SyncBatchNorm)
# the batch norms the tracer keeps whole (their subclasses included, left unfolded unless in _FOLDABLE)
_NORMS = (nn.BatchNorm2d, InPlaceAbn2d, SyncBatchNormAct, nn.SyncBatchNorm)
_WITH_ACT = (BatchNormAct2d, InPlaceAbn2d, SyncBatchNormAct)
# a folded pair's hooks would be lost (the norm's) or see other values (the conv's): such a pair stays as it is
_HOOKS = (
    ("_forward_pre_hooks", "forward pre-hook"),
    ("_forward_hooks", "forward hook"),
    ("_backward_pre_hooks", "backward pre-hook"),
    ("_backward_hooks", "backward hook"),
)
_SHOWN = 8  # module paths named in a message

M = TypeVar("M", bound=nn.Module)


class FoldedNorm(nn.Module):
    """Where a batch norm was folded into the convolution before it: only the norm's activation is left.

    The model it belongs to computes in eval mode what it computed before folding. Training it
    would train a network without that batch norm, so train(True) warns.
    """

    def __init__(self, act: nn.Module, into: str) -> None:
        super().__init__()
        self.act = act
        self.into = into

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(x)
        return out

    def train(self, mode: bool = True) -> FoldedNorm:
        """As nn.Module.train; mode True warns: the folded batch norm no longer normalises by batch."""
        if mode:
            warnings.warn(
                "training a model from zoo.fuse_for_inference: its batch norms are folded into the convolutions "
                "before them and will not normalise by batch; train the model you fused instead",
                UserWarning,
                stacklevel=3,
            )
        super().train(mode)
        return self

    def extra_repr(self) -> str:
        return f"folded into {self.into!r}"


class NormLeafTracer(torch.fx.Tracer):
    """torch.fx's tracer with zoo's norm-act modules kept whole, so that they show as one call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _NORMS) or super().is_leaf_module(m, module_qualified_name)


def fuse_for_inference(model: M, *, strict: bool = False) -> M:
    """An eval-mode copy of model with each batch norm folded into the convolution that feeds it; model is untouched.

    Folds a BatchNorm2d, BatchNormAct2d or InPlaceAbn2d (ConvNormAct's norm included) whose input is
    the output of an nn.Conv2d used nowhere else, called once, and not a feature tap: the convolution
    takes the norm's scale and shift (per-channel terms in float64) and the norm's place holds a FoldedNorm
    with the norm's activation. The copy computes what model computes in eval mode, faster; its
    state_dict has no norm entries and a bias for each folded convolution. Its train(True) warns.

    Works on classifiers and on the feature extractors torch.fx can trace (feature_cls 'list' or
    'dict' with taps between top-level modules, and 'getter'); others raise FeatureNotAvailableError.
    A batch norm it cannot fold (no convolution of its own before it, as in pre-activation blocks)
    stays as it is, with a warning naming it; strict=True raises InvalidValueError instead. So does a
    batch norm that, or whose convolution, has hooks (forward, pre-forward, backward): folding would drop
    the norm's and change what the conv's see, so the pair and its hooks stay as they are, and are named.
    The copy's hooks are the model's own callables (a recorder object gets the copy's calls too), except
    methods of the model's own modules, which follow the copy.
    Synchronised batch norms (convert_sync_batchnorm's, nn.SyncBatchNorm) fold as the batch norms they are in eval.
    """
    if not isinstance(model, nn.Module):
        raise InvalidValueError(f"model={model!r} is invalid: expected a torch.nn.Module")
    check_bool("strict", strict)
    fused = copy.deepcopy(model, _shared_hooks(model)).eval()
    try:
        graph = NormLeafTracer().trace(fused)
    except Exception as e:  # whatever stops torch.fx, the answer is the same: say so, name it
        raise FeatureNotAvailableError(
            f"fuse_for_inference needs a model torch.fx can trace to find each convolution's batch norm; "
            f"{type(model).__name__} cannot be traced ({type(e).__name__}: {e}). Fuse the classifier and call "
            "its forward_intermediates, or build the extractor with feature_cls='getter'"
        ) from None
    folds, left, hooked = _plan(fused, graph)
    if (left or hooked) and strict:
        raise InvalidValueError(f"fuse_for_inference(strict=True): {_listing(left, hooked)}")
    for conv_path, norm_path in folds:
        _fold(fused, conv_path, norm_path)
    fused.eval()
    if left or hooked:
        warnings.warn(f"fuse_for_inference: {_listing(left, hooked)}", UserWarning, stacklevel=2)
    return fused


def _shared_hooks(model: nn.Module) -> dict[int, object]:
    """A deepcopy memo under which the copy's hooks are model's own callables, not copies of their objects.

    A method of one of model's modules (a hook feature extractor's) is copied with the module it belongs to.
    """
    inside = {id(m) for m in model.modules()}
    memo: dict[int, object] = {}
    for module in model.modules():
        for attr, _ in _HOOKS:
            for hook in getattr(module, attr, {}).values():
                if id(getattr(hook, "__self__", None)) not in inside:
                    memo[id(hook)] = hook
    return memo


def _shown(items: list[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _listing(left: list[str], hooked: list[str]) -> str:
    parts = []
    if left:
        parts.append(
            f"{len(left)} batch norm(s) left unfolded (no convolution of their own directly before them, "
            f"or one whose output is also used elsewhere): {_shown(left)}"
        )
    if hooked:
        parts.append(
            f"{len(hooked)} batch norm(s) left unfolded to keep the hooks on them or on their convolution "
            f"(folding would drop or change what those hooks see): {_shown(hooked)}"
        )
    return "; ".join(parts)


def hook_names(path: str, module: nn.Module) -> list[str]:
    """Each hook registered on module, as '<kind> <function> on <path>'."""
    names = []
    for attr, kind in _HOOKS:
        for hook in getattr(module, attr, {}).values():
            function = getattr(hook, "__qualname__", None) or type(hook).__qualname__
            names.append(f"{kind} {function} on {path or type(module).__name__!r}")
    return names


def _plan(model: nn.Module, graph: torch.fx.Graph) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(conv path, norm path) pairs to fold, the paths of the batch norms that cannot be, and those kept for
    hooks (each with its hooks named)."""
    modules = dict(model.named_modules())
    calls = Counter(id(modules[str(n.target)]) for n in graph.nodes if n.op == "call_module")
    taps = tap_paths(model)
    folds: list[tuple[str, str]] = []
    left: list[str] = []
    hooked: list[str] = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        norm = modules[str(node.target)]
        if not isinstance(norm, _NORMS):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        conv = (
            modules.get(str(source.target))
            if isinstance(source, torch.fx.Node) and source.op == "call_module"
            else None
        )
        foldable = (
            type(norm) in _FOLDABLE
            and norm.running_mean is not None
            and norm.running_var is not None
            and calls[id(norm)] == 1
            and isinstance(source, torch.fx.Node)
            and type(conv) is nn.Conv2d
            and len(source.users) == 1
            and calls[id(conv)] == 1
            # a tap whose module holds the conv but not the norm outputs the conv's output: it must stay
            and not any(under_path(str(source.target), t) and not under_path(str(node.target), t) for t in taps)
            and conv.out_channels == norm.running_mean.numel()
        )
        if foldable:
            assert isinstance(source, torch.fx.Node)  # narrowed above
            hooks = hook_names(str(node.target), norm) + hook_names(str(source.target), modules[str(source.target)])
            if hooks:
                hooked.append(f"{node.target} ({', '.join(hooks)})")
            else:
                folds.append((str(source.target), str(node.target)))
        else:
            left.append(str(node.target))
    return folds, left, hooked


def under_path(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + ".")


def tap_paths(model: nn.Module) -> list[str]:
    """The paths of the modules whose outputs are feature taps (an extractor's re-sequenced names included)."""
    infos = getattr(model, "feature_info", None)
    modules = dict(model.named_modules())
    paths: list[str] = []
    for info in infos if isinstance(infos, Iterable) else ():
        path = getattr(info, "module", None)
        if isinstance(path, str):
            # list/dict extractors name a nested tap's module with underscores in place of the first dots
            paths += [p for p in (path, path.replace(".", "_")) if p in modules]
    return paths


@torch.no_grad()
def _fold(model: nn.Module, conv_path: str, norm_path: str) -> None:
    conv = model.get_submodule(conv_path)
    norm = model.get_submodule(norm_path)
    assert isinstance(conv, nn.Conv2d)  # checked by _plan
    weight = conv.weight
    mean = norm.get_buffer("running_mean").double()
    var = norm.get_buffer("running_var").double()
    gamma = norm.weight.double() if isinstance(norm.weight, torch.Tensor) else torch.ones_like(mean)
    beta = norm.bias.double() if isinstance(norm.bias, torch.Tensor) else torch.zeros_like(mean)
    eps = float(norm.eps)  # type: ignore[arg-type]  # a float on every foldable norm
    scale = gamma / torch.sqrt(var + eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    # the per-channel terms in float64, the weight scaled in its own dtype: one rounding per element
    new_weight = weight * scale.to(weight.dtype).view(-1, 1, 1, 1)
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        new_weight = new_weight.contiguous(memory_format=torch.channels_last)
    conv.weight = nn.Parameter(new_weight, requires_grad=weight.requires_grad)
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(weight.dtype), requires_grad=weight.requires_grad)
    act = norm.act if isinstance(norm, _WITH_ACT) else nn.Identity()
    parent, _, child = norm_path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, FoldedNorm(act, conv_path))
