"""Parameter groups for torch.optim: weight-decay exclusion and layer-wise learning-rate decay.

`torch.optim.AdamW(param_groups(model, weight_decay=0.05, layer_decay=0.75, lr=1e-3))`, for instance.
Weight decay skips the parameters it would only harm: every 1-D one (norm scales and shifts, biases,
layer scales), every one named '*.bias', and the names (fnmatch patterns) the model's no_weight_decay()
lists or the caller adds. Layer-wise decay uses the model's group_matcher(): group i of n (the stem
first, the head last) trains at layer_decay ** (n - 1 - i) times the learning rate, so the head keeps
the full rate; this is the reference library's rule, so a recipe written for it carries over. Every
group carries its factor as "lr_scale" (what the reference library's schedulers read) and, given lr,
its own "lr" (what torch's own optimizers and schedulers read).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn

from zoo.domain.checks import check_bool, check_float
from zoo.domain.errors import InvalidValueError, ModelSurfaceError
from zoo.domain.grouping import JOINS_PREVIOUS, GroupMatcher, GroupRule, group_names
from zoo.domain.protocols import DecayExemptions, LayerGroups, lacking

__all__ = ["JOINS_PREVIOUS", "GroupMatcher", "GroupRule", "group_names", "layer_groups", "param_groups"]


def layer_groups(model: nn.Module, coarse: bool = False) -> list[list[str]]:
    """model's parameter names in the groups of its group_matcher(coarse), input to output (group i: layer id i).

    A model without group_matcher raises ModelSurfaceError naming what it lacks.
    """
    coarse = check_bool("coarse", coarse)
    missing = lacking(model, LayerGroups)
    matcher: GroupMatcher | None = None
    if isinstance(model, LayerGroups):
        try:
            matcher = model.group_matcher(coarse)
        except NotImplementedError:  # a ZooModule subclass that declares no groups of its own
            missing = ("group_matcher",)
    if matcher is None:
        raise ModelSurfaceError(
            f"{type(model).__qualname__} has no parameter groups: it lacks a working {', '.join(missing)} "
            "(zoo.domain.protocols.LayerGroups)",
            missing=missing,
        )
    return group_names((name for name, _ in model.named_parameters()), matcher)


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    layer_decay: float | None = None,
    no_weight_decay_list: Iterable[str] = (),
    lr: float | None = None,
) -> list[dict[str, object]]:
    """torch.optim parameter groups for model's trainable parameters, each parameter in exactly one.

    weight_decay (>= 0) applies to every parameter except the 1-D ones, biases and the names in the
    model's no_weight_decay() and no_weight_decay_list, which get 0. layer_decay in (0, 1] scales each
    group_matcher group's learning rate (see the module docstring); None keeps one rate and needs no
    group_matcher. Each group is {"params", "weight_decay", "lr_scale"}, plus "lr" (lr times lr_scale)
    when lr is given. Frozen parameters (requires_grad False) are left out. A bad value raises
    InvalidValueError naming it; layer_decay on a model without group_matcher, ModelSurfaceError.
    """
    weight_decay = check_float("weight_decay", weight_decay, ge=0.0)
    decay_per_layer = _check_layer_decay(layer_decay)
    base_lr = None if lr is None else check_float("lr", lr, ge=0.0)
    exempt = _exempt_names(model, no_weight_decay_list)
    layer_of: dict[str, int] = {}
    last = 0
    if decay_per_layer is not None:
        groups = layer_groups(model)
        last = len(groups) - 1
        layer_of = {name: i for i, names in enumerate(groups) for name in names}
    by_key: dict[tuple[int, bool], dict[str, object]] = {}
    params_of: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = param.ndim > 1 and not name.endswith(".bias") and not any(fnmatch.fnmatchcase(name, p) for p in exempt)
        layer = layer_of.get(name, last)
        key = (layer, decays)
        if key not in by_key:
            scale = 1.0 if decay_per_layer is None else decay_per_layer ** (last - layer)
            params_of[key] = []
            group: dict[str, object] = {
                "params": params_of[key],
                "weight_decay": weight_decay if decays else 0.0,
                "lr_scale": scale,
            }
            if base_lr is not None:
                group["lr"] = base_lr * scale
            by_key[key] = group
        params_of[key].append(param)
    return list(by_key.values())


def _check_layer_decay(value: object) -> float | None:
    if value is None:
        return None
    expected = "a finite number in (0, 1] (1 decays nothing), or None for no layer-wise decay"
    try:
        v = check_float("layer_decay", value, ge=0.0, le=1.0)
    except InvalidValueError:
        v = 0.0
    if v <= 0.0:
        raise InvalidValueError(f"layer_decay={value!r} is invalid: expected {expected}")
    return v


def _exempt_names(model: nn.Module, extra: Iterable[str]) -> frozenset[str]:
    """The names (fnmatch patterns) trained without weight decay: the caller's and the model's own."""
    if isinstance(extra, str):  # a str is an iterable of one-letter patterns: almost surely a mistake
        raise InvalidValueError(
            f"no_weight_decay_list={extra!r} is invalid: expected a collection of names or fnmatch patterns, "
            f"e.g. [{extra!r}]"
        )
    names = list(extra)
    for name in names:
        if not isinstance(name, str):
            raise InvalidValueError(
                f"no_weight_decay_list={names!r} is invalid: "
                f"{name!r} is not a name (expected strings: names or fnmatch patterns)"
            )
    own = model.no_weight_decay() if isinstance(model, DecayExemptions) else frozenset()
    return frozenset(names) | own
