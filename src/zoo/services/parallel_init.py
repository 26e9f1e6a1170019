"""Running a model's random initialisation on several threads, with the same result on any number.

torch fills a CPU tensor with random numbers on one thread (its generator is serial), so for a model
of tens of millions of weights, drawing them is most of the time create_model takes. Inside
`parallel_random_fills()`, each normal or uniform fill of a tensor (Tensor.normal_ / uniform_ and
torch.nn.init's normal_, uniform_, kaiming_* and xavier_*, which come down to them) is recorded
instead of run, with a seed drawn from torch's global generator in the order of the calls. The
recorded fills then run on torch.get_num_threads() threads, each from its own generator seeded with
its seed. So:

- torch.manual_seed(s) before the build reproduces the weights, whatever the number of threads;
- each tensor is drawn from the same distribution as before (the same function, another generator);
- the values differ from those a serial run from the global generator would give.

A fill only writes: it never reads what the tensor held. Any other operation on a tensor with a fill
pending (reading it, scaling it, zeroing a part) first runs every pending fill, so code inside sees
the values it would have seen without this. Operations that only look at a tensor's shape or make a
view of it do not wait. Only CPU tensors are deferred; on other devices the fills run as called.
So torch.nn.init.trunc_normal_, which reads its draw to reject values out of bounds, runs at once:
an init that wants its fills spread uses normal_ where the bounds are out of reach (as ConvNeXt's).
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["parallel_random_fills"]

# Fills that write random values without reading the tensor; each takes a `generator` keyword. Only the
# functions torch (2.14) hands to __torch_function__ as themselves: nn.init's kaiming_normal_, xavier_normal_
# and xavier_uniform_ reach it only as the Tensor.normal_ / uniform_ they call, and trunc_normal_ as the
# Tensor fills it then reads back (so they run at once); listed, they would never match.
_RANDOM_FILLS: frozenset[Callable[..., object]] = frozenset(
    {
        nn.init.normal_,
        nn.init.uniform_,
        nn.init.kaiming_uniform_,
        torch.Tensor.normal_,
        torch.Tensor.uniform_,
    }
)

# Operations that read a tensor's metadata or make a view, never its values: they need no pending fill
# to have run (a later operation on the view waits, as the view shares the pending storage).
_METADATA_ONLY: frozenset[str] = frozenset(
    {
        "__getitem__",
        "__len__",
        "dim",
        "numel",
        "size",
        "stride",
        "view",
        "reshape",
        "flatten",
        "unflatten",
        "transpose",
        "permute",
        "detach",
        "__get__",  # attribute reads: shape, ndim, dtype, device, requires_grad, is_meta, ...
    }
)

# Below this many elements a fill runs on the calling thread: a thread's hand-off costs more.
_SMALL = 1 << 16


def _deferrable(t: object) -> bool:
    # plain tensors and parameters only: a subclass (a fake or traced tensor) may need the caller's thread
    if not isinstance(t, torch.Tensor) or type(t) not in (torch.Tensor, nn.Parameter):
        return False
    return t.device.type == "cpu" and t.layout == torch.strided and t.numel() > 0


def _storage_key(t: torch.Tensor) -> int:
    return int(t.untyped_storage().data_ptr())


def _reads_pending(values: Iterable[object], storages: set[int]) -> bool:
    """Whether any tensor among values (or in a list or tuple among them) lies in one of the pending storages."""
    for value in values:
        for v in value if isinstance(value, (list, tuple)) else (value,):
            # (a meta or empty tensor's storage is at 0, which no pending fill's is)
            cpu = isinstance(v, torch.Tensor) and v.device.type == "cpu" and v.layout == torch.strided
            if cpu and int(v.untyped_storage().data_ptr()) in storages:
                return True
    return False


# Ops every init makes that take no tensor: they pass straight through
_NO_TENSORS = frozenset({torch._C._set_grad_enabled})


@attrs.frozen
class _Fill:
    """One recorded random fill: the call, its seed, and the autograd modes it was made under.

    Grad mode and inference mode are per thread: a fill run on another thread runs under the caller's
    (a model created inside torch.inference_mode() holds inference tensors, writable only there).
    """

    func: Callable[..., object]
    args: tuple[object, ...]
    kwargs: Mapping[str, object]
    seed: int
    grad_enabled: bool
    inference_mode: bool
    size: int

    def run(self) -> None:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        with torch.inference_mode(self.inference_mode), torch.set_grad_enabled(self.grad_enabled):
            self.func(*self.args, **self.kwargs, generator=generator)


def _run_lane(lane: Sequence[_Fill]) -> None:
    for fill in lane:
        fill.run()


def _run_all(fills: Sequence[_Fill], threads: int) -> None:
    """Run fills on up to `threads` threads (the calling one included), largest first, balanced by size."""
    lanes: list[list[_Fill]] = [[] for _ in range(max(1, threads))]
    loads = [(0, i) for i in range(len(lanes))]
    for fill in sorted(fills, key=lambda f: -f.size):
        if fill.size < _SMALL:
            lanes[0].append(fill)  # the calling thread's lane
            continue
        load, i = heapq.heappop(loads)
        lanes[i].append(fill)
        heapq.heappush(loads, (load + fill.size, i))
    busy = [lane for lane in lanes[1:] if lane]
    if not busy:
        _run_lane(lanes[0])
        return
    with ThreadPoolExecutor(max_workers=len(busy), thread_name_prefix="zoo-init") as pool:
        futures = [pool.submit(_run_lane, lane) for lane in busy]
        _run_lane(lanes[0])
        for future in futures:
            future.result()  # re-raises a fill's error here


class _DeferRandomFills(TorchFunctionMode):
    def __init__(self, threads: int) -> None:
        super().__init__()
        self.threads = threads
        self.pending: list[_Fill] = []
        self.storages: set[int] = set()

    def flush(self) -> None:
        fills, self.pending, self.storages = self.pending, [], set()
        _run_all(fills, self.threads)

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: object,
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
    ) -> object:
        kwargs = kwargs or {}
        # torch.nn.init hands its tensor over as a keyword
        target = args[0] if args else kwargs.get("tensor")
        if (
            func in _RANDOM_FILLS
            and isinstance(target, torch.Tensor)
            and _deferrable(target)
            and kwargs.get("generator") is None
        ):
            key = _storage_key(target)
            if key in self.storages:  # a second fill of the same memory runs after the first
                self.flush()
            # the seed comes from the global generator, in call order: manual_seed reproduces the build
            seed = int(torch.randint(0, 2**62, ()).item())
            size = target.numel()
            call = {k: v for k, v in kwargs.items() if k != "generator"}
            modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
            self.pending.append(_Fill(func, tuple(args), call, seed, *modes, size))
            self.storages.add(key)
            return target
        if (
            self.storages
            and func not in _NO_TENSORS
            and getattr(func, "__name__", "") not in _METADATA_ONLY
            and _reads_pending((*args, *kwargs.values()), self.storages)
        ):
            self.flush()
        return func(*args, **kwargs)


@contextlib.contextmanager
def parallel_random_fills(threads: int | None = None) -> Iterator[None]:
    """Random fills of CPU tensors made inside run on `threads` threads (default torch.get_num_threads()).

    Every fill has run when the block ends; when it raises, the fills still pending are dropped (what
    they would write is being thrown away). See the module docstring for what stays the same
    (distributions, reproducibility under manual_seed) and what does not (the values).
    """
    mode = _DeferRandomFills(torch.get_num_threads() if threads is None else threads)
    with mode:
        yield
    mode.flush()  # outside the mode: the fills run for real, not recorded again
