"""The default WeightApplier: filter, adapt, check, then load a checkpoint into a freshly built model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

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
    CheckpointMismatchError and leaves the model as it was. With on_meta, tensors are assigned
    (no copy) and what the checkpoint does not cover is initialised afresh.
    """
    sd: StateDict = dict(state_dict)
    if spec.pretrained_filter is not None:
        sd = spec.pretrained_filter(sd, model)
    num_classes = cfg.num_classes if request.num_classes is None else request.num_classes
    in_chans = cfg.input_size[0] if request.in_chans is None else request.in_chans
    notes: list[str] = []
    fresh = _drop_classifier(sd, cfg, num_classes, notes)
    _adapt_first_conv(sd, cfg, in_chans, notes)

    expected = model.state_dict(keep_vars=True)
    check_fit(expected, sd, fresh=fresh, model_name=spec.name)
    leftover = _check_leftovers(model, sd, fresh)
    sd = {k: _cast_like(v, expected[k]) for k, v in sd.items()}

    model.load_state_dict(sd, strict=False, assign=on_meta)
    _materialize(model, leftover)
    for note in notes:
        log.info("%s: %s", spec.name, note)
    return model


def _drop_classifier(sd: StateDict, cfg: DefaultCfg, num_classes: int, notes: list[str]) -> str:
    """Remove the checkpoint's classifier when the class count differs; returns the prefix left fresh."""
    if num_classes == cfg.num_classes:
        return ""
    if not cfg.classifier:
        raise CheckpointMismatchError(
            f"num_classes={num_classes} differs from the checkpoint's {cfg.num_classes}, but the cfg names no "
            f"classifier to replace (DefaultCfg.classifier is empty); use num_classes={cfg.num_classes}"
        )
    dropped = keys_under(sd, cfg.classifier)
    for k in dropped:
        del sd[k]
    if num_classes == 0:
        notes.append(
            f"num_classes=0: no classifier; dropped the checkpoint's {cfg.classifier!r} ({cfg.num_classes} classes)"
        )
    else:
        notes.append(
            f"num_classes={num_classes}: classifier {cfg.classifier!r} freshly initialised "
            f"(the checkpoint's has {cfg.num_classes} classes)"
        )
    return cfg.classifier


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
    missing = [k for k in expected if k not in sd and not under(k, fresh)]
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


def _cast_like(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # assign=True would adopt the checkpoint's dtype (e.g. fp16); the model's own dtype wins
    if value.is_floating_point() and target.is_floating_point() and value.dtype != target.dtype:
        return value.to(target.dtype)
    return value


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
