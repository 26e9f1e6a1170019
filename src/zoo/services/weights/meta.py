"""Building a model without spending time or memory on parameters a checkpoint will replace."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import cast

import torch
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook
from torch.overrides import TorchFunctionMode

_local = threading.local()
# torch keeps registration hooks in one process-wide OrderedDict that every thread iterates on each
# register_parameter; adding and removing a hook per build raced with those iterations. So the hook
# is installed once, for good, and does nothing outside a thread inside parameters_on_meta. (That one
# insertion is the only mutation left: torch offers no way to add a hook without it.)
_install_lock = threading.Lock()
_installed = False


def _param_to_meta(module: nn.Module, name: str, param: nn.Parameter) -> nn.Parameter | None:
    moved: dict[int, tuple[nn.Parameter, nn.Parameter]] | None = getattr(_local, "moved", None)
    if moved is None or param.is_meta or isinstance(param, nn.parameter.UninitializedParameter):
        return None
    # one Parameter registered in two places (tied weights) must stay one Parameter on meta;
    # the original is kept alongside so its id cannot be reused while the build runs
    if id(param) not in moved:
        moved[id(param)] = (param, nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad))
    return moved[id(param)][1]


# In-place ops that only write values. On a meta tensor there are no values, so they are skipped:
# besides being pointless, some (normal_) take a Python path whose first use imports torch._dynamo,
# which costs seconds and tens of MiB.
_VALUE_WRITES = frozenset(
    {
        "normal_",
        "uniform_",
        "fill_",
        "zero_",
        "random_",
        "bernoulli_",
        "exponential_",
        "log_normal_",
        "cauchy_",
        "geometric_",
        "erfinv_",
        "clamp_",
        "mul_",
        "add_",
        "sub_",
        "div_",
        "copy_",
    }
)


def _writes_values(func: Callable[..., object]) -> bool:
    name = getattr(func, "__name__", "")
    # torch.nn.init's public initialisers are in-place and end in '_'. Some reach the mode whole (normal_,
    # uniform_, constant_, kaiming_uniform_ in torch 2.14), and the ops they call inside do not pass through
    # it again; the others reach it as those ops (kaiming_normal_ as Tensor.normal_, ones_ as fill_).
    # trunc_normal_ returns at once for a meta tensor, before any op.
    return name in _VALUE_WRITES or (getattr(func, "__module__", None) == "torch.nn.init" and name.endswith("_"))


class _SkipWrites(TorchFunctionMode):
    """Skips every value write (see _writes_values) to a tensor `skips` picks; runs everything else."""

    def __init__(self, skips: Callable[[torch.Tensor], bool]) -> None:
        super().__init__()
        self.skips = skips

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: object,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
    ) -> object:
        # torch.nn.init hands its tensor over as a keyword
        target = args[0] if args else (kwargs or {}).get("tensor")
        if isinstance(target, torch.Tensor) and _writes_values(func) and self.skips(target):
            return target
        return func(*args, **(kwargs or {}))


def _is_meta(t: torch.Tensor) -> bool:
    return t.is_meta


class KeptStorage:
    """The real tensors parameters_on_meta(keep_storage=True) moved parameters off, by the meta parameter taking over.

    Building on meta still allocates each parameter (the layer's torch.empty) before the move. Handing that
    memory back at materialisation, instead of allocating anew, allocates the model as an ordinary build
    does: the fresh memory a second allocation got cost a page fault per 4 KiB when the init wrote it.
    """

    def __init__(self) -> None:
        self._by_meta: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}

    def _keep(self, moved: Mapping[int, tuple[nn.Parameter, nn.Parameter]]) -> None:
        for original, on_meta in moved.values():
            self._by_meta[id(on_meta)] = (on_meta, original.detach())

    def take(self, param: nn.Parameter) -> torch.Tensor | None:
        """The storage param was moved off (once), or None: none kept, or not of param's shape and dtype (pruned)."""
        entry = self._by_meta.pop(id(param), None)
        if entry is None or entry[0] is not param:  # the meta parameter itself, not another with its id
            return None
        data = entry[1]
        return data if data.shape == param.shape and data.dtype == param.dtype else None


@contextlib.contextmanager
def parameters_on_meta(*, keep_storage: bool = False) -> Iterator[KeptStorage]:
    """Modules constructed inside put their parameters on the meta device; buffers stay real.

    Parameters are what a checkpoint replaces, so their random init is skipped. Buffers are small
    and some are non-persistent (computed in __init__, never in a checkpoint), so building them for
    real is what makes them right without a per-module hook. With keep_storage, the memory each
    parameter was allocated in is kept in the KeptStorage yielded, for materialize_parameters to use
    (for a model to be initialised next; a checkpoint brings memory of its own).
    """
    _install_hook()
    outer = getattr(_local, "moved", None)
    moved: dict[int, tuple[nn.Parameter, nn.Parameter]] = {} if outer is None else outer
    _local.moved = moved
    kept = KeptStorage()
    try:
        with _SkipWrites(_is_meta):  # torch function modes are per thread, like _local
            yield kept
    finally:
        _local.moved = outer
    if keep_storage:
        kept._keep(moved)


def _install_hook() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            # torch types the hook as returning None, but documents and honours a returned replacement
            register_module_parameter_registration_hook(cast("Callable[..., None]", _param_to_meta))
            _installed = True


def meta_tensors(model: nn.Module) -> list[tuple[str, str]]:
    """(module path, tensor name) of every parameter or buffer still on the meta device."""
    return [
        (path, name)
        for path, module in model.named_modules()
        for name, t in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))
        if t.is_meta
    ]


def _on(t: torch.Tensor, device: torch.device) -> bool:
    return t.device.type == device.type and (device.index is None or t.device.index == device.index)


def materialize_parameters(
    model: nn.Module,
    device: torch.device | str = "cpu",
    *,
    fill: float | None = None,
    kept: KeptStorage | None = None,
) -> None:
    """Give each parameter still on the meta device real storage on device, uninitialised (or fill).

    The storage kept for it (see KeptStorage) when there is one on device, else new. Parameters shared
    between modules stay shared. fill writes a value into each (NaN, say, to check that an init writes
    every parameter); buffers are left as they are.
    """
    target = torch.device(device)
    memo: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if not param.is_meta:
                continue
            new = memo.get(id(param))
            if new is None:
                data = kept.take(param) if kept is not None else None
                if data is None or not _on(data, target):
                    # torch.empty, not empty_like: empty_like of a meta tensor takes a slow Python path
                    data = torch.empty(param.shape, dtype=param.dtype, device=target)
                if fill is not None:
                    data.fill_(fill)
                new = memo[id(param)] = nn.Parameter(data, requires_grad=param.requires_grad)
            setattr(module, name, new)
