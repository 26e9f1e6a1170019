"""Inference copies whose convolutions and linear layers apply their activation (and bias) in one oneDNN call.

On a CPU, torch runs `act(conv(x))` as two passes over memory: the convolution writes its output, the
activation reads it back and writes it again; a linear layer with a bias first fills its output with the bias,
then accumulates the product onto it. oneDNN, which torch's CPU convolutions and matmuls already run on, can
apply the bias and an activation while it writes the output (a "post-op"); torch exposes that as
torch.ops.mkldnn._convolution_pointwise and torch.ops.mkldnn._linear_pointwise, the kernels torch.compile's
CPU backend emits. fuse_kernels swaps an nn.Conv2d or nn.Linear whose output goes only to one activation module
for a ConvAct / LinearAct holding the same parameters (same names, same state_dict) and puts an nn.Identity in
the activation's place; a linear layer with a bias and no activation after it becomes a LinearAct too. A batch
norm left unfolded (one with no convolution of its own before it: a pre-activation block's) becomes a ConvAct
too: in eval it is a per-channel scale and shift, a depthwise 1x1 convolution, with its activation as post-op
(one pass where torch's batch norm and activation take two: densenet121's, bfloat16, 2.3x faster).

A fused module computes with oneDNN only where it can (a CPU float32 or bfloat16 input of its weight's dtype,
no gradient wanted); anywhere else it runs the plain convolution or linear layer and its activation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import attrs
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from zoo.archs.fuse import NormLeafTracer, hook_names, tap_paths, under_path
from zoo.archs.layers.norm_act import BatchNormAct2d

__all__ = ["ConvAct", "LinearAct", "fuse_kernels", "kernels_available"]

_FUSED_DTYPES = (torch.float32, torch.bfloat16)
# modules the chain from a layer to its activation may pass through: the identity in eval (an inference copy is)
_PASS_THROUGH = (nn.Identity, nn.Dropout)


@attrs.frozen
class PostOp:
    """A oneDNN unary post-op: its name, scalar arguments and algorithm, as the pointwise kernels take them."""

    attr: str
    scalars: tuple[float, ...] = ()
    algorithm: str = ""


NO_ACT = PostOp("none")


def post_op(act: nn.Module) -> PostOp | None:
    """The post-op computing what act computes, or None where oneDNN has none (exact classes only: a subclass
    may compute something else)."""
    kind = type(act)
    if kind is nn.ReLU:
        return PostOp("relu")
    if kind is nn.SiLU:
        return PostOp("swish")
    if kind is nn.GELU:
        approximate = getattr(act, "approximate", "none")
        return PostOp("gelu", (), approximate) if approximate in ("none", "tanh") else None
    if kind is nn.Hardswish:
        return PostOp("hardswish")
    if kind is nn.Hardsigmoid:
        return PostOp("hardsigmoid")
    if kind is nn.Sigmoid:
        return PostOp("sigmoid")
    if kind is nn.Tanh:
        return PostOp("tanh")
    if kind is nn.ReLU6:
        return PostOp("hardtanh", (0.0, 6.0))
    if kind is nn.LeakyReLU:
        return PostOp("leaky_relu", (float(getattr(act, "negative_slope", 0.01)),))
    return None


def kernels_available() -> bool:
    """Whether this torch build has oneDNN and its pointwise convolution and linear kernels."""
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        return False
    try:
        return all(hasattr(torch.ops.mkldnn, op) for op in ("_convolution_pointwise", "_linear_pointwise"))
    except (AttributeError, RuntimeError):  # a build without the mkldnn op namespace
        return False


def _use_kernel(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        not isinstance(x, torch.fx.Proxy)  # a traced graph records the plain layer and its activation
        and x.device.type == "cpu"
        and x.dtype == weight.dtype
        and x.dtype in _FUSED_DTYPES
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


class ConvAct(nn.Module):
    """An nn.Conv2d and the activation after it (its `act`); weight and bias are the convolution's own."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module, op: PostOp) -> None:
        super().__init__()
        padding = conv.padding
        if isinstance(padding, str) or conv.padding_mode != "zeros":
            raise ValueError(f"ConvAct takes a zero-padded convolution with numeric padding, not {conv!r}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding: tuple[int, ...] = tuple(padding)
        self.dilation, self.groups = conv.dilation, conv.groups
        # the kernel's list arguments, made once rather than on every call
        self._geometry = (list(self.padding), list(self.stride), list(self.dilation))
        self.weight = conv.weight
        self.bias = conv.bias
        self.act = act
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_kernel(x, self.weight):
            out: torch.Tensor = torch.ops.mkldnn._convolution_pointwise(
                x,
                self.weight,
                self.bias,
                *self._geometry,
                self.groups,
                self.op.attr,
                list(self.op.scalars),
                self.op.algorithm,
            )
            return out
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        fallback: torch.Tensor = self.act(y)
        return fallback

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, post_op={self.op.attr!r}"
        )


class LinearAct(nn.Module):
    """An nn.Linear and the activation after it (its `act`; nn.Identity for a bias alone)."""

    def __init__(self, linear: nn.Linear, act: nn.Module, op: PostOp) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.act = act
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_kernel(x, self.weight):
            out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
                x, self.weight, self.bias, self.op.attr, list(self.op.scalars), self.op.algorithm
            )
            return out
        fallback: torch.Tensor = self.act(F.linear(x, self.weight, self.bias))
        return fallback

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, post_op={self.op.attr!r}"


@attrs.frozen
class _Fusion:
    layer: str
    act: str | None  # None: a linear layer's bias alone
    op: PostOp


def fuse_kernels(model: nn.Module) -> int:
    """Swap model's convolutions, linear layers and unfolded batch norms for ConvAct / LinearAct where that
    computes the same; in place.

    model is an inference copy in eval mode (zoo.optimize_for_inference's), in float32 (the copy's dtype is
    set after: a batch norm's scale is computed from its float32 statistics). A layer fuses with the activation
    module its output goes to (through identities) when both are called once, that activation is the only
    use of the output, neither has hooks, and no feature tap holds the layer without the activation. A batch
    norm (BatchNorm2d, BatchNormAct2d with an activation oneDNN has) in eval mode without hooks becomes a
    depthwise ConvAct wherever it is. Returns how many modules were swapped; a model torch.fx cannot trace
    keeps its layers (its batch norms are still swapped).
    """
    try:
        graph = NormLeafTracer().trace(model)
    except Exception:  # whatever stops torch.fx: no layer fusion, the copy computes as it did
        fusions = []
    else:
        fusions = _plan(model, graph)
    for fusion in fusions:
        _swap(model, fusion)
    return len(fusions) + _swap_norms(model)


def _swap_norms(model: nn.Module) -> int:
    """Each eval-mode batch norm (with an activation oneDNN has, or none) as a depthwise ConvAct; how many."""
    swaps: list[tuple[str, ConvAct]] = []
    for path, norm in model.named_modules():
        if type(norm) not in (nn.BatchNorm2d, BatchNormAct2d) or norm.training or hook_names(path, norm):
            continue
        assert isinstance(norm, nn.BatchNorm2d)  # the two classes above
        act = norm.act if isinstance(norm, BatchNormAct2d) else nn.Identity()
        op = NO_ACT if type(act) is nn.Identity else post_op(act)
        if op is not None and norm.running_mean is not None and norm.running_var is not None:
            swaps.append((path, ConvAct(_channel_affine(norm), act, op)))
    for path, fused in swaps:
        _set(model, path, fused)
    return len(swaps)


@torch.no_grad()
def _channel_affine(norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A depthwise 1x1 convolution computing what norm computes in eval mode (per-channel terms in float64)."""
    mean, var = norm.get_buffer("running_mean"), norm.get_buffer("running_var")
    channels = mean.numel()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(mean, dtype=torch.float64)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean, dtype=torch.float64)
    scale = gamma / torch.sqrt(var.double() + float(norm.eps))
    conv = nn.Conv2d(channels, channels, 1, groups=channels, device="meta")
    conv.weight = nn.Parameter(scale.to(mean.dtype).view(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter((beta - mean.double() * scale).to(mean.dtype), requires_grad=False)
    return conv


def _plan(model: nn.Module, graph: torch.fx.Graph) -> list[_Fusion]:
    modules = dict(model.named_modules())
    calls = Counter(id(modules[str(n.target)]) for n in graph.nodes if n.op == "call_module")
    taps = tap_paths(model)

    def sole(node: torch.fx.Node) -> nn.Module | None:
        """The module node calls, if the graph calls it only there and it has no hooks; else None."""
        if node.op != "call_module":
            return None
        module = modules[str(node.target)]
        return module if calls[id(module)] == 1 and not hook_names(str(node.target), module) else None

    fusions: list[_Fusion] = []
    for node in graph.nodes:
        layer = sole(node)
        if type(layer) not in (nn.Conv2d, nn.Linear):
            continue
        if isinstance(layer, nn.Conv2d) and (isinstance(layer.padding, str) or layer.padding_mode != "zeros"):
            continue
        chain, act = _activation_after(node, sole)
        op = post_op(modules[str(act.target)]) if act is not None else None
        tapped = act is not None and any(
            any(under_path(str(n.target), t) for n in chain) and not under_path(str(act.target), t) for t in taps
        )
        if act is not None and op is not None and not tapped:
            fusions.append(_Fusion(str(node.target), str(act.target), op))
        elif isinstance(layer, nn.Linear) and layer.bias is not None:
            fusions.append(_Fusion(str(node.target), None, NO_ACT))
    return fusions


def _activation_after(
    node: torch.fx.Node, sole: Callable[[torch.fx.Node], nn.Module | None]
) -> tuple[list[torch.fx.Node], torch.fx.Node | None]:
    """The nodes from node through pass-through modules, and the module call they end in: the activation
    candidate, called only there with their output alone (or None)."""
    chain = [node]
    while len(chain[-1].users) == 1:
        user = next(iter(chain[-1].users))
        module = sole(user) if user.args == (chain[-1],) and not user.kwargs else None
        if type(module) in _PASS_THROUGH:
            chain.append(user)
            continue
        return chain, (user if module is not None else None)
    return chain, None


def _swap(model: nn.Module, fusion: _Fusion) -> None:
    layer = model.get_submodule(fusion.layer)
    act: nn.Module = nn.Identity()
    if fusion.act is not None:
        act = model.get_submodule(fusion.act)
        _set(model, fusion.act, nn.Identity())
    fused: nn.Module
    if isinstance(layer, nn.Conv2d):
        fused = ConvAct(layer, act, fusion.op)
    else:
        assert isinstance(layer, nn.Linear)  # _plan fuses these two kinds only
        fused = LinearAct(layer, act, fusion.op)
    _set(model, fusion.layer, fused)


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
