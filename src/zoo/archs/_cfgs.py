"""Published-weight configurations, kept as package data (one JSON file per family), and the specs built on them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources

from zoo.domain.values import DefaultCfg, FeatureCfg, ModelConstructor, ModelSpec


def family_cfgs(family: str) -> dict[str, tuple[DefaultCfg, ...]]:
    """Model name -> its DefaultCfgs (default first), read from cfgs/<family>.json."""
    text = resources.files("zoo.archs").joinpath("cfgs").joinpath(f"{family}.json").read_text(encoding="utf-8")
    data: dict[str, list[dict[str, object]]] = json.loads(text)
    return {name: tuple(DefaultCfg.from_dict(c) for c in cfgs) or (DefaultCfg(),) for name, cfgs in data.items()}


def pruned_layout(name: str) -> str:
    """The channel layout a pruned name is built at, shipped as package data (pruned/<name>.txt)."""
    return resources.files("zoo.archs").joinpath("pruned").joinpath(f"{name}.txt").read_text(encoding="utf-8")


def family_specs(
    module: str, constructor: ModelConstructor, archs: Mapping[str, Mapping[str, object]], feature_cfg: FeatureCfg
) -> tuple[ModelSpec, ...]:
    """One ModelSpec per name of a family module: its arguments, its cfgs (cfgs/<family>.json), one feature cfg."""
    cfgs = family_cfgs(module.rsplit(".", 1)[-1])
    return tuple(
        ModelSpec(
            name=name,
            family=module,
            constructor=constructor,
            model_args=args,
            default_cfgs=cfgs[name],
            feature_cfg=feature_cfg,
        )
        for name, args in archs.items()
    )
