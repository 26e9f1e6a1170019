"""Deriving a prune spec from a model's weights by channel magnitude.

The model is traced with torch.fx to find its channel spaces: a conv or linear output starts one;
norms, activations, pooling and channel gates keep it; an elementwise sum or product joins the
spaces it combines (a residual group is one space). Each prunable space keeps its channels of
largest L1 norm, and the kept weights are sliced from the original.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping

import attrs
import torch
import torch.nn.functional as F
from torch import fx, nn

from zoo.domain.checks import check_float
from zoo.domain.errors import ZooError
from zoo.domain.prune import PruneSpec
from zoo.services.pruner.apply import apply_spec, resizable
from zoo.services.pruner.probe import CONVS, NORMS, RESIZABLE, own_tensors

__all__ = ["derive_spec"]


def derive_spec(model: nn.Module, ratio: float) -> tuple[PruneSpec, nn.Module]:
    """The spec keeping each channel space's largest-L1 channels by ratio, and a copy of model pruned to it."""
    ratio = check_float("ratio", ratio, ge=0.0, lt=1.0)
    spaces = _trace_spaces(model)
    keep = _choose_channels(model, spaces, ratio)
    sliced = _sliced_tensors(model, spaces, keep)
    spec = _layout_spec(model, sliced)
    # copy the model but not the tensors the slices replace: those start as meta placeholders, so the
    # rebuilt layers skip their init, and the slices are then assigned (no copy)
    owners = dict(model.named_modules())
    memo: dict[int, object] = {}
    for key in sliced:
        path, _, name = key.rpartition(".")
        owner = owners[path]
        t = own_tensors(owner)[name]
        placeholder = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(placeholder, t.requires_grad) if isinstance(t, nn.Parameter) else placeholder
    pruned = copy.deepcopy(model, memo)
    apply_spec(pruned, spec)
    pruned.load_state_dict(sliced, strict=False, assign=True)
    left = [k for k, v in pruned.state_dict().items() if v.is_meta]
    if left:  # every placeholder is one of the slices' keys; this would be a bug in the slicing
        raise ZooError(f"derive left {', '.join(left[:5])} without values")
    return spec, pruned


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
        return min(ra, rb)


@attrs.define
class _Spaces:
    """Channel spaces of a traced model: which layer reads and writes which space."""

    uf: _UnionFind = attrs.field(factory=_UnionFind)
    # layer path -> (space of its input channels, space of its output channels)
    io: dict[str, tuple[int | None, int | None]] = attrs.field(factory=dict)
    blocked: dict[int, str] = attrs.field(factory=dict)

    def root(self, s: int | None) -> int | None:
        return None if s is None else self.uf.find(s)

    def block(self, s: int | None, why: str) -> None:
        if s is not None:
            self.blocked.setdefault(s, why)

    def is_blocked(self, s: int) -> str | None:
        r = self.uf.find(s)
        return next((why for b, why in self.blocked.items() if self.uf.find(b) == r), None)


# activations, pooling and other layers that keep each channel where it is and own no per-channel tensor
_KEEP_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SiLU,
    nn.GELU,
    nn.Mish,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_JOIN_OPS: frozenset[object] = frozenset(
    {operator.add, operator.mul, operator.sub, operator.truediv, operator.iadd, operator.imul}
    | {torch.add, torch.mul, torch.sub, torch.div}
    | {"add", "mul", "sub", "div", "add_", "mul_", "sub_", "div_"}
)
_KEEP_OPS: frozenset[object] = frozenset(
    {F.relu, F.relu6, F.silu, F.gelu, F.sigmoid, F.hardsigmoid, F.hardswish, F.leaky_relu, F.dropout, F.pad}
    | {F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.sigmoid, torch.relu}
    | {torch.tanh, torch.flatten}
    | {"sigmoid", "sigmoid_", "relu", "relu_", "tanh", "contiguous", "clone", "flatten", "mean", "amax", "sum"}
)
_SHAPE_OPS: frozenset[object] = frozenset({getattr, "size", "dim"})


def _is_width_free_gate(module: nn.Module) -> bool:
    """A module whose every weight is a 1-to-1 channel Conv1d (ECA): it works at any width and keeps channels."""
    weighted = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    return bool(weighted) and all(
        isinstance(m, nn.Conv1d) and m.in_channels == 1 and m.out_channels == 1 for m in weighted
    )


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # subclasses of the resizable layers (a norm fused with its activation, a 'same'-padding conv) are
        # followed as the layer they extend
        resizable_subclass = isinstance(m, RESIZABLE) and resizable(m)
        return resizable_subclass or _is_width_free_gate(m) or super().is_leaf_module(m, module_qualified_name)


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if isinstance(stack, Mapping) and stack:
        return str(list(stack.keys())[-1])
    return node.name


def _op_name(target: object) -> str:
    """An fx node's target as a reader knows it: 'torch.conv2d', 'Tensor.roll', not a built-in's repr."""
    if isinstance(target, str):
        return f"Tensor.{target}"
    name = getattr(target, "__name__", None)
    if not isinstance(name, str):
        return repr(target)
    module = getattr(target, "__module__", None)
    owner = "torch" if module in (None, "torch", "torch._C", "torch._C._nn", "torch._C._VariableFunctions") else module
    return f"{owner}.{name}"


def _keeps_channel_dim(node: fx.Node) -> bool:
    """Whether a reduction or flatten leaves dim 1 as the channel dim."""
    target = node.target
    if target in ("flatten", torch.flatten):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return isinstance(start, int) and start == 1
    if target in ("mean", "amax", "sum"):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims_t = dims if isinstance(dims, (tuple, list)) else (dims,)
        return dims is not None and all(isinstance(d, int) and d not in (0, 1, -3, -4) for d in dims_t)
    return True


def _trace_spaces(model: nn.Module) -> _Spaces:
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, ...) on dynamic code
        raise ZooError(
            f"{type(model).__name__} cannot be traced to find its channels, so it cannot be pruned: {e}"
        ) from e
    modules = dict(model.named_modules())
    sp = _Spaces()
    space: dict[fx.Node, int | None] = {}

    def arg_spaces(node: fx.Node) -> list[int]:
        return [s for a in node.all_input_nodes if (s := space.get(a)) is not None]

    for node in graph.nodes:
        ins = arg_spaces(node)
        first = space.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "placeholder":
            s = sp.uf.new()
            sp.block(s, "the network input")
            space[node] = s
        elif node.op == "output":
            for s in ins:
                sp.block(s, "the network output")
        elif node.op == "get_attr":
            space[node] = None
        elif node.op == "call_module":
            path = str(node.target)
            module = modules[path]
            space[node] = _module_space(sp, path, module, first)
        elif node.target in _SHAPE_OPS or (node.target is operator.getitem and first is None):
            space[node] = None
        elif node.target in _JOIN_OPS:
            joined: int | None = None
            for s in ins:
                joined = s if joined is None else sp.uf.union(joined, s)
            space[node] = joined
        elif node.target in _KEEP_OPS and _keeps_channel_dim(node):
            space[node] = first
        elif not ins:
            space[node] = None
        else:
            raise ZooError(
                f"{type(model).__name__} cannot be pruned: layer {_where(node)!r} applies {_op_name(node.target)} "
                "to channels, and only convolutions, norms, activations, pooling, channel gates and "
                "elementwise sums/products can be followed"
            )
    return sp


def _module_space(sp: _Spaces, path: str, module: nn.Module, first: int | None) -> int | None:
    if isinstance(module, CONVS) and module.groups > 1:
        depthwise = module.groups == module.in_channels == module.out_channels
        if depthwise:
            sp.io[path] = (first, first)
            return first
        out = sp.uf.new()
        why = f"grouped conv {path!r} (groups={module.groups})"
        sp.block(first, why)
        sp.block(out, why)
        sp.io[path] = (first, out)
        return out
    if isinstance(module, (*CONVS, nn.Linear)):
        out = sp.uf.new()
        sp.io[path] = (first, out)
        return out
    if isinstance(module, NORMS):
        sp.io[path] = (first, first)
        return first
    if isinstance(module, _KEEP_MODULES) or _is_width_free_gate(module):
        return first
    if isinstance(module, nn.Flatten) and module.start_dim == 1:
        return first
    if first is None:
        return None
    raise ZooError(
        f"{type(module).__name__} layer {path!r} blocks pruning: its effect on channels is unknown "
        "(only Conv/BatchNorm/Linear, activations, pooling and channel gates can be followed)"
    )


def _choose_channels(model: nn.Module, sp: _Spaces, ratio: float) -> dict[int, torch.Tensor]:
    """Space root -> sorted indices of the channels to keep, for every space that loses channels."""
    modules = dict(model.named_modules())
    scores: dict[int, torch.Tensor] = {}
    for path, (_, out) in sp.io.items():
        module = modules[path]
        if out is None or not isinstance(module, (*CONVS, nn.Linear)) or sp.io[path][0] == out:
            continue  # channel-preserving layers (norms, depthwise convs) add no evidence of their own
        weight = module.weight.detach()
        l1 = torch.linalg.vector_norm(weight.flatten(1), ord=1, dim=1, dtype=torch.float64)
        r = sp.uf.find(out)
        scores[r] = scores[r] + l1 if r in scores else l1
    keep: dict[int, torch.Tensor] = {}
    for r, score in scores.items():
        if sp.is_blocked(r) is not None:
            continue
        width = score.numel()
        k = max(1, round(width * (1.0 - ratio)))
        if k == width:
            continue
        top = torch.topk(score, k, largest=True, sorted=False).indices
        keep[r] = torch.sort(top).values
    return keep


def _sliced_tensors(model: nn.Module, sp: _Spaces, keep: Mapping[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of every Conv/BatchNorm/Linear layer, sliced to the kept channels (state_dict keys)."""
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    for path, (s_in, s_out) in sp.io.items():
        module = modules[path]
        k_in = keep.get(sp.uf.find(s_in)) if s_in is not None else None
        k_out = keep.get(sp.uf.find(s_out)) if s_out is not None else None
        for name, t in own_tensors(module).items():
            v = t.detach()
            if v.ndim >= 1 and k_out is not None:
                v = v.index_select(0, k_out.to(v.device))
            depthwise = isinstance(module, CONVS) and module.groups > 1
            if name == "weight" and v.ndim >= 2 and k_in is not None and not depthwise:
                v = v.index_select(1, k_in.to(v.device))
            # the pruned copy owns its tensors: index_select made new ones, the rest are cloned
            out[f"{path}.{name}"] = v.clone() if v.data_ptr() == t.data_ptr() else v
    return out


def _layout_spec(model: nn.Module, sliced: Mapping[str, torch.Tensor]) -> PruneSpec:
    """One entry per Conv/BatchNorm/Linear weight, in state_dict order, as the published layouts list them."""
    entries: list[tuple[str, tuple[int, ...]]] = []
    for path, module in model.named_modules():
        if isinstance(module, RESIZABLE) and isinstance(getattr(module, "weight", None), torch.Tensor):
            key = f"{path}.weight"
            entries.append((key, tuple(sliced[key].shape if key in sliced else module.weight.shape)))
    return PruneSpec(tuple(entries))
