"""Meta copies and shape probes: what a (pruned) model's widths are, found without computing anything.

The lowest layer of the pruner: cost counts on a meta copy, apply checks a spec by probing one.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence

import attrs
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from zoo.domain.errors import PruneSpecError, ZooError
from zoo.services.builder import image_size_built_for

__all__ = [
    "CONVS",
    "NORMS",
    "RESIZABLE",
    "Probe",
    "input_channels",
    "input_size",
    "meta_clone",
    "meta_input",
    "own_tensors",
    "probe_widths",
    "set_module",
    "stub_norms",
]

CONVS = (nn.Conv1d, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
RESIZABLE = (*CONVS, *NORMS, nn.Linear)
_IMAGE_SIZE = 224  # shapes on the meta device cost nothing; a full-size input avoids collapsing tiny maps


def meta_clone(model: nn.Module) -> nn.Module:
    """A deep copy of model whose parameters and buffers are on the meta device (no memory, no copy)."""
    memo: dict[int, object] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) not in memo:
            m = t.detach().to("meta")
            memo[id(t)] = nn.Parameter(m, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else m
    clone = copy.deepcopy(model, memo)
    clone.eval()
    return clone


def own_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's own parameters and buffers (not its children's) by name."""
    return dict(itertools.chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False)))


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put module in model at the dotted path, in place of the one there."""
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


class _NormWidth(nn.Module):
    """Stands in for a norm layer on a meta copy: keeps its width, computes nothing.

    Batch norm on the meta device goes through decompositions whose first use imports torch._dynamo
    (seconds); a shape probe only needs the width.
    """

    def __init__(self, num_features: int, stands_for: str) -> None:
        super().__init__()
        self.num_features = num_features
        self.stands_for = stands_for  # the class named in messages: the user's layer, not this stand-in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def stub_norms(clone: nn.Module) -> None:
    """Replace the batch norms of a meta copy with width-keeping stand-ins."""
    for path, m in list(clone.named_modules()):
        if isinstance(m, NORMS) and path:
            set_module(clone, path, _NormWidth(m.num_features, type(m).__name__))


def input_channels(model: nn.Module) -> int:
    """The channel count of the images model takes (its first Conv2d's input width)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ZooError(f"{type(model).__name__} has no Conv2d: cannot tell how many input channels it takes")


def input_size(model: nn.Module, image_size: int | None = None) -> tuple[int, int]:
    """(height, width) to probe model at: image_size if given, else the size it was built for, else 224."""
    if image_size is not None:
        return image_size, image_size
    # a model built for one image size (a ViT's img_size) takes only that one
    return image_size_built_for(model) or (_IMAGE_SIZE, _IMAGE_SIZE)


def meta_input(model: nn.Module, *, batch: int = 2, image_size: int | None = None) -> torch.Tensor:
    """A batch of meta images model takes (see input_size)."""
    return torch.empty(batch, input_channels(model), *input_size(model, image_size), device="meta")


def _expected_width(module: nn.Module) -> tuple[int, int] | None:
    """(input dim, width) a layer needs its input to have, for the layers whose width a spec sets."""
    if isinstance(module, CONVS):
        return 1, module.in_channels
    if isinstance(module, (*NORMS, _NormWidth)):
        return 1, module.num_features
    if isinstance(module, nn.Linear):
        return -1, module.in_features
    return None


class _Lineage(TorchFunctionMode):
    """Tracks which layer produced each tensor through functional ops (torch.relu, x * gate, a + b).

    An elementwise op joining two paths of different widths (a residual sum) raises PruneSpecError
    naming both producers, their widths and the block the op runs in.
    """

    def __init__(self, producers: dict[int, str], keep: list[torch.Tensor], stack: list[str]) -> None:
        super().__init__()
        self.producers = producers
        self.keep = keep
        self.stack = stack

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: object,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
    ) -> object:
        wide = [a for a in args if isinstance(a, torch.Tensor) and a.ndim >= 2]
        try:
            out = func(*args, **(kwargs or {}))
        except RuntimeError as e:
            widths = {int(a.shape[1]) for a in wide}
            if len(wide) >= 2 and len(widths) > 1:
                where = next((n for n in reversed(self.stack) if n), "the model")
                paths = ", ".join(
                    f"{int(a.shape[1])} channels from {self.producers.get(id(a), 'an earlier op')!r}" for a in wide
                )
                raise PruneSpecError(
                    f"widths conflict inside layer {where!r}: {getattr(func, '__name__', func)} joins {paths}; "
                    "the paths of a residual sum (or another elementwise op) must keep equal widths"
                ) from e
            raise
        if isinstance(out, torch.Tensor) and out.ndim >= 2 and id(out) not in self.producers:
            for a in wide:
                if id(a) in self.producers and a.shape[1] == out.shape[1]:
                    self.producers[id(out)] = self.producers[id(a)]
                    self.keep.append(out)
                    break
        return out


@attrs.frozen
class Probe:
    """What one meta forward of a (pruned) model showed: its tap widths and final feature width."""

    taps: Mapping[str, int]
    num_features: int | None


def probe_widths(model: nn.Module, taps: Sequence[str]) -> Probe:
    """Run a meta tensor through a meta model; a width that does not fit raises PruneSpecError naming the layer."""
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    stack: list[str] = []
    producers: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # outputs stay alive so their ids keep naming their producers
    tap_widths: dict[str, int] = {}
    tap_set = set(taps)

    def pre(module: nn.Module, args: tuple[object, ...]) -> None:
        name = names.get(id(module), "")
        stack.append(name)
        need = _expected_width(module)
        x = args[0] if args else None
        if need is None or not isinstance(x, torch.Tensor) or x.ndim < 2:
            return
        dim, width = need
        if x.shape[dim] != width:
            src = producers.get(id(x))
            origin = f"from {src!r}" if src else "from the layer before it"
            kind = module.stands_for if isinstance(module, _NormWidth) else type(module).__name__
            sized = src is not None and isinstance(modules.get(src), (*RESIZABLE, _NormWidth))
            entries = f"{name}.weight" + (f" and {src}.weight" if sized else "")
            raise PruneSpecError(
                f"widths conflict at layer {name!r} ({kind}): it takes {width} channels but "
                f"receives {x.shape[dim]} {origin}; make the two widths equal in the spec ({entries})"
            )

    def post(module: nn.Module, args: tuple[object, ...], out: object) -> None:
        name = stack.pop() if stack else ""
        if isinstance(out, torch.Tensor):
            if isinstance(module, (*RESIZABLE, _NormWidth)) or id(out) not in producers:
                producers[id(out)] = name
                keep.append(out)
            if name in tap_set and out.ndim >= 2:
                tap_widths[name] = int(out.shape[1])

    handles = [h for m in model.modules() for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        x = meta_input(model)
        num_features: int | None = None
        with torch.no_grad(), _Lineage(producers, keep, stack):
            forward_features = getattr(model, "forward_features", None)
            forward_head = getattr(model, "forward_head", None)
            if callable(forward_features) and callable(forward_head):
                feats = forward_features(x)
                if isinstance(feats, torch.Tensor):
                    num_features = int(feats.shape[1] if feats.ndim == 4 else feats.shape[-1])
                forward_head(feats)
            else:
                model(x)
    except PruneSpecError:
        raise
    except RuntimeError as e:
        where = next((n for n in reversed(stack) if n), "the model")
        first_line = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise PruneSpecError(f"the pruned widths do not fit inside layer {where!r}: {first_line}") from e
    finally:
        for h in handles:
            h.remove()
    return Probe(taps=tap_widths, num_features=num_features)
