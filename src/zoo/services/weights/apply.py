"""The default WeightApplier: filter, adapt, check, then load a checkpoint into a freshly built model."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

import torch
from torch import nn

from zoo.domain.errors import CheckpointMismatchError, WeightsError
from zoo.domain.values import BuildRequest, DefaultCfg, ModelSpec
from zoo.services.weights.adapt import adapt_input_conv, keys_under, under
from zoo.services.weights.meta import meta_tensors

StateDict = dict[str, torch.Tensor]

log = logging.getLogger("zoo.weights")

_SHOWN = 10  # keys listed per kind in a mismatch message


def apply_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    cfg: DefaultCfg,
    request: BuildRequest,
    on_meta: bool,
) -> nn.Module:
    """Load a checkpoint made for cfg into model, adapting its classifier and first conv to the request.

    Everything is checked before anything is changed: a checkpoint that does not fit raises
    CheckpointMismatchError and leaves the model as it was. The checkpoint's classifier is loaded
    where its shapes fit the model as built, and dropped with a warning where they do not. With
    on_meta, tensors are assigned (no copy) and what the checkpoint does not cover is initialised afresh.
    """
    sd: StateDict = dict(state_dict)
    if spec.pretrained_filter is not None:
        sd = spec.pretrained_filter(sd, model)
    in_chans = cfg.input_size[0] if request.in_chans is None else request.in_chans
    expected = model.state_dict(keep_vars=True)
    notes: list[str] = []
    lossy: list[str] = []
    fresh = _fit_classifier(sd, expected, cfg, request, lossy)
    _adapt_first_conv(sd, cfg, in_chans, notes)

    check_fit(expected, sd, fresh=fresh, model_name=spec.name)
    leftover = _check_leftovers(model, sd, fresh)
    sd = _cast_all(sd, expected, spec.name)

    model.load_state_dict(sd, strict=False, assign=on_meta)
    _materialize(model, leftover)
    for note in notes + lossy:
        log.info("%s: %s", spec.name, note)
    for note in lossy:  # a log line alone is easy to miss where something was lost
        warnings.warn(f"{spec.name}: {note}", UserWarning, stacklevel=_caller_level())
    return model


def _fit_classifier(
    sd: StateDict, expected: Mapping[str, torch.Tensor], cfg: DefaultCfg, request: BuildRequest, lossy: list[str]
) -> str:
    """Keep the checkpoint's classifier if it fits the model as built, else drop it; returns the prefix left fresh.

    The checkpoint's own shapes decide, not cfg.num_classes: that describes the published weights,
    while a user's file may have been fine-tuned to any class count.
    """
    head = cfg.classifier
    if not head:
        if request.num_classes is not None and request.num_classes != cfg.num_classes:
            raise CheckpointMismatchError(
                f"num_classes={request.num_classes} differs from the checkpoint's {cfg.num_classes}, but the cfg "
                f"names no classifier to replace (DefaultCfg.classifier is empty); use num_classes={cfg.num_classes}"
            )
        return ""
    want = {k: expected[k] for k in keys_under(expected, head)}
    order = {k: i for i, k in enumerate(want)}  # the checkpoint's keys listed in the model's order
    have = {k: sd[k] for k in sorted(keys_under(sd, head), key=lambda k: order.get(k, len(order)))}
    if have.keys() == want.keys() and all(have[k].shape == want[k].shape for k in have):
        return ""
    weight = want.get(f"{head}.weight")
    classes = f"num_classes={weight.shape[0] if weight is not None and weight.ndim else 0}"
    for k in have:
        del sd[k]
    if not have:
        lossy.append(f"{classes}: the checkpoint has no classifier {head!r}; {_shapes(want)} freshly initialised")
    elif not want:
        lossy.append(f"{classes}: the model has no classifier; dropped the checkpoint's {_shapes(have)}")
    else:
        lossy.append(
            f"{classes}: the checkpoint's classifier {_shapes(have)} does not fit the model's {_shapes(want)}; "
            f"dropped it, {head!r} freshly initialised"
        )
    return head


def _caller_level() -> int:
    """The stacklevel of the first frame outside zoo, so a warning points at the caller's create_model line.

    torch.compiler.disable's frames are passed over too: create_model runs under it once torch._dynamo is imported.
    """
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and _inside_create_model(str(frame.f_globals.get("__name__", ""))):
        frame = frame.f_back
        level += 1
    return level


def _inside_create_model(module: str) -> bool:
    return module.partition(".")[0] == "zoo" or module.startswith("torch._dynamo.")


def _shapes(tensors: Mapping[str, torch.Tensor]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())


def _adapt_first_conv(sd: StateDict, cfg: DefaultCfg, in_chans: int, notes: list[str]) -> None:
    have = cfg.input_size[0]
    if in_chans == have:
        return
    key = f"{cfg.first_conv}.weight"
    if not cfg.first_conv or key not in sd:
        where = f"the checkpoint has no {key!r}" if cfg.first_conv else "DefaultCfg.first_conv is empty"
        raise CheckpointMismatchError(
            f"in_chans={in_chans} differs from the checkpoint's {have}, but there is no first conv to adapt "
            f"({where}); use in_chans={have}"
        )
    sd[key] = adapt_input_conv(sd[key], in_chans, name=key)
    how = "RGB filters summed" if in_chans == 1 else f"RGB filters repeated cyclically, scaled by 3/{in_chans}"
    notes.append(f"in_chans={in_chans}: {key!r} adapted from {have} input channels ({how})")


def check_fit(
    expected: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], *, fresh: str = "", model_name: str = "model"
) -> None:
    """Raise CheckpointMismatchError unless sd has exactly the model's keys (less fresh ones) and shapes."""
    missing = [k for k in expected if k not in sd and not under(k, fresh) and not _filled_by_torch(k)]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sd
        if k in expected and sd[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [
        _listing(f"{len(missing)} missing", missing),
        _listing(f"{len(unexpected)} unexpected", unexpected),
        _listing(f"{len(mismatched)} with other shapes (checkpoint vs model)", mismatched),
    ]
    found = "; ".join(p for p in parts if p)
    raise CheckpointMismatchError(
        f"the checkpoint does not fit {model_name}: {found}. Check that it was made for this architecture "
        "(num_classes= and in_chans= adapt the classifier and the first conv)",
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
    )


def _listing(label: str, keys: Sequence[str]) -> str:
    if not keys:
        return ""
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{label}: {', '.join(keys[:_SHOWN])}{more}"


def _filled_by_torch(key: str) -> bool:
    # older checkpoints predate BatchNorm's counter; the model's own value (0) stands, as torch does it
    return key.rsplit(".", 1)[-1] == "num_batches_tracked"


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "int"


def _cast_problem(value: torch.Tensor, dtype: torch.dtype) -> str:
    """Why value cannot become dtype without changing what it means, or ''."""
    have, want = _dtype_kind(value.dtype), _dtype_kind(dtype)
    if (have == want and want in ("float", "complex")) or (have, want) == ("int", "float"):
        return ""
    if want == "int" and have in ("int", "float"):
        if have == "float" and not bool(torch.isfinite(value).all() and torch.equal(value, value.trunc())):
            return "its values are not all whole numbers"
        info = torch.iinfo(dtype)
        if value.numel() and (value.min().item() < info.min or value.max().item() > info.max):
            return f"its values do not fit {dtype}"
        return ""
    return f"{have} values have no {want} meaning"


def _cast_all(sd: StateDict, expected: Mapping[str, torch.Tensor], model_name: str) -> StateDict:
    """sd in the model's dtypes; CheckpointMismatchError naming every tensor whose cast would lose meaning."""
    # assign=True would adopt the checkpoint's dtypes (fp16, or ints where the model has floats): the model's win
    problems: list[str] = []
    for k, v in sd.items():
        target = expected[k].dtype
        if v.dtype != target and (why := _cast_problem(v, target)):
            problems.append(f"{k} is {v.dtype} where the model has {target} ({why})")
    if problems:
        raise CheckpointMismatchError(
            f"the checkpoint's dtypes do not fit {model_name}: {'; '.join(problems[:_SHOWN])}. "
            "zoo casts only where the values keep their meaning (ints to floats, whole floats to ints)",
            mismatched=problems,
        )
    return {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in sd.items()}


def _check_leftovers(
    model: nn.Module, sd: Mapping[str, torch.Tensor], fresh: str
) -> list[tuple[nn.Module, Callable[[], object]]]:
    """Modules to initialise afresh after loading, with their reset; anything else left on meta raises now."""
    modules = dict(model.named_modules())
    leftover: dict[str, tuple[nn.Module, Callable[[], object]]] = {}
    stuck: list[str] = []
    for path, name in meta_tensors(model):
        key = f"{path}.{name}" if path else name
        if key in sd:
            continue
        module = modules[path]
        own = [n for n, _ in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))]
        # a module is re-initialised whole, so every tensor it owns must be one the checkpoint leaves fresh
        whole = all(under(f"{path}.{n}" if path else n, fresh) for n in own)
        reset: object = getattr(module, "reset_parameters", None)
        if under(key, fresh) and whole and callable(reset):
            leftover[path] = (module, reset)
        else:
            stuck.append(key)
    if stuck:
        raise WeightsError(
            f"after loading, {', '.join(stuck[:_SHOWN])} would have no values (the checkpoint does not cover "
            "them and their module cannot initialise itself with reset_parameters())"
        )
    return list(leftover.values())


def _materialize(model: nn.Module, modules: Sequence[tuple[nn.Module, Callable[[], object]]]) -> None:
    device = next((t.device for t in model.parameters() if not t.is_meta), torch.device("cpu"))
    for module, reset in modules:
        module.to_empty(device=device, recurse=False)
        reset()
