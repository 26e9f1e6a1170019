"""The cfg a create_model call builds with: the name's (tag's), or the caller's pretrained_cfg, then the overlay.

A pretrained_cfg given as a mapping is read by DefaultCfg's field names. Code written for timm hands in
timm's dict cfgs (`timm_model.pretrained_cfg`, or one changed from `.copy()`), which also carry keys of
timm's PretrainedCfg that DefaultCfg has no field for. Those keys are decided one by one here:

- descriptive ones (where a cfg came from, its paper, notes, class names, sizes zoo does not check) say
  nothing about what is built or loaded: accepted and dropped;
- ones that would change what is loaded (another hub file or revision, an in-memory state_dict, a custom
  loader, a label offset) are accepted only unset (None, False, 0, empty), as timm's dicts carry them; set,
  they are refused, naming the key and what to use instead: zoo has no such setting, and loading other
  weights than asked without saying so is the one thing a cfg must not do.

Any other key is refused, naming the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from zoo.domain.errors import InvalidArgumentError, InvalidValueError
from zoo.domain.values import CFG_FIELDS, DefaultCfg

__all__ = ["DESCRIPTIVE_KEYS", "UNSUPPORTED_KEYS", "cfg_from_mapping", "requested_cfg", "tagged_name"]

# timm PretrainedCfg keys without a DefaultCfg field that only describe: dropped
DESCRIPTIVE_KEYS: frozenset[str] = frozenset(
    {
        "architecture",
        "source",
        "description",
        "origin_url",
        "paper_name",
        "paper_ids",
        "notes",
        "min_input_size",
        "test_pool_size",
        "label_names",
        "label_descriptions",
    }
)

# timm PretrainedCfg keys that would change what is loaded: accepted unset only; the value says what to use instead
UNSUPPORTED_KEYS: Mapping[str, str] = {
    "hf_hub_filename": "zoo reads the repo's model.safetensors, else pytorch_model.bin; name another file with "
    "checkpoint_path or url",
    "hf_hub_revision": "name the revision in hf_hub_id as 'org/name@revision'",
    "state_dict": "give the ModelZoo a weight_loader serving it (zoo.services.weights.StateDictLoader)",
    "custom_load": "zoo loads every checkpoint the same way (the architecture's checkpoint filter)",
    "label_offset": "load the checkpoint with its own class count (num_classes) and adapt the head",
}


def _unset(value: object) -> bool:
    return value is None or value is False or (isinstance(value, (str, int, tuple, list, dict)) and not value)


def cfg_from_mapping(data: Mapping[str, object], *, argument: str = "pretrained_cfg") -> DefaultCfg:
    """A DefaultCfg from a mapping of field names (timm's dict cfgs included: see the module docstring).

    Fields it leaves out take DefaultCfg's defaults, as timm's PretrainedCfg(**cfg) does.
    """
    if not all(isinstance(k, str) for k in data):
        raise InvalidValueError(f"{argument}={data!r} is invalid: expected a mapping of DefaultCfg field names")
    unknown = sorted(k for k in data if k not in CFG_FIELDS and k not in DESCRIPTIVE_KEYS and k not in UNSUPPORTED_KEYS)
    if unknown:
        raise InvalidValueError(
            f"{argument} has unknown key(s) {unknown}; valid keys: {', '.join(CFG_FIELDS)} (and, from timm's "
            f"cfgs, {', '.join(sorted(DESCRIPTIVE_KEYS))}, which only describe and are dropped)"
        )
    for key, instead in UNSUPPORTED_KEYS.items():
        if key in data and not _unset(data[key]):
            raise InvalidValueError(
                f"{argument}[{key!r}]={data[key]!r} is not supported: zoo has no such setting; {instead}"
            )
    return DefaultCfg.from_dict({k: v for k, v in data.items() if k in CFG_FIELDS})


def requested_cfg(name: str, resolved: DefaultCfg, pretrained_cfg: object, overlay: object) -> DefaultCfg:
    """The cfg create_model builds name with: resolved (the name's tag's, or a saved model's) unless the caller
    gave pretrained_cfg (a DefaultCfg, a mapping as cfg_from_mapping reads it), then pretrained_cfg_overlay.

    A str pretrained_cfg (a tag, as timm takes it) is resolved with the name by the caller: here it is refused.
    """
    cfg = resolved
    if isinstance(pretrained_cfg, DefaultCfg):
        cfg = pretrained_cfg
    elif isinstance(pretrained_cfg, Mapping):
        cfg = cfg_from_mapping(cast(Mapping[str, object], pretrained_cfg))
    elif pretrained_cfg is not None:
        raise InvalidArgumentError(
            f"pretrained_cfg={pretrained_cfg!r} is invalid for {name!r}: expected a DefaultCfg, a mapping of its "
            "fields, a tag (str) or None"
        )
    if overlay is None:
        return cfg
    if not isinstance(overlay, Mapping) or not all(isinstance(k, str) for k in overlay):
        raise InvalidValueError(
            f"pretrained_cfg_overlay={overlay!r} is invalid: expected a mapping of DefaultCfg field names to values"
        )
    return cfg.evolve(cast(Mapping[str, object], overlay)) if overlay else cfg


def tagged_name(name: str, tag: str) -> str:
    """name with the tag a str pretrained_cfg names (timm's form: create_model(name, pretrained_cfg=tag)).

    A name that carries another tag already is refused: the call would ask for two cfgs.
    """
    base, dot, own = name.partition(".")
    if dot and own and own != tag:
        raise InvalidArgumentError(
            f"pretrained_cfg={tag!r} names a tag, and {name!r} names another: give the tag once "
            f"({base}.{tag}, or {name} without pretrained_cfg)"
        )
    return f"{base}.{tag}" if tag else name
