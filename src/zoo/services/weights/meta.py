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
    # torch.nn.init's public initialisers (kaiming_uniform_, trunc_normal_, ...) are in-place and end in '_';
    # they reach the mode whole, and the ops they call inside do not pass through it again
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


def _is_parameter(t: torch.Tensor) -> bool:
    return isinstance(t, nn.Parameter)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules constructed inside put their parameters on the meta device; buffers stay real.

    Parameters are what a checkpoint replaces, so their random init is skipped. Buffers are small
    and some are non-persistent (computed in __init__, never in a checkpoint), so building them for
    real is what makes them right without a per-module hook.
    """
    _install_hook()
    outer = getattr(_local, "moved", None)
    _local.moved = {} if outer is None else outer
    try:
        with _SkipWrites(_is_meta):  # torch function modes are per thread, like _local
            yield
    finally:
        _local.moved = outer


@contextlib.contextmanager
def parameters_unwritten() -> Iterator[None]:
    """Modules constructed inside get real parameters whose values are never written: for an init that writes each once.

    Every in-place write to an nn.Parameter (torch's default init, a family's own init pass) is
    skipped, so the parameters hold whatever memory held until something writes them; buffers are
    computed for real. Against parameters_on_meta, nothing is allocated twice: building on meta
    still allocates each parameter (torch.empty) before moving it, and allocating it again after
    the build lands on fresh pages, paying a page fault per 4 KiB when the init first writes them.
    """
    with _SkipWrites(_is_parameter):
        yield


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


def materialize_parameters(model: nn.Module, device: torch.device | str = "cpu", *, fill: float | None = None) -> None:
    """Give each parameter still on the meta device real storage on device, uninitialised (or fill).

    Parameters shared between modules stay shared. fill writes a value into every parameter, those
    already real included (NaN, say, to check that an init writes every parameter); buffers are left
    as they are.
    """
    memo: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if not param.is_meta:
                if fill is not None:
                    with torch.no_grad():
                        param.fill_(fill)
                continue
            new = memo.get(id(param))
            if new is None:
                # torch.empty, not empty_like: empty_like of a meta tensor takes a slow Python path
                data = torch.empty(param.shape, dtype=param.dtype, device=device)
                if fill is not None:
                    data.fill_(fill)
                new = memo[id(param)] = nn.Parameter(data, requires_grad=param.requires_grad)
            setattr(module, name, new)
