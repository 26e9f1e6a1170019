"""Published-weight configurations, kept as package data (one JSON file per family)."""

from __future__ import annotations

import json
from importlib import resources

from zoo.domain.values import DefaultCfg


def family_cfgs(family: str) -> dict[str, tuple[DefaultCfg, ...]]:
    """Model name -> its DefaultCfgs (default first), read from cfgs/<family>.json."""
    text = resources.files("zoo.archs").joinpath("cfgs").joinpath(f"{family}.json").read_text(encoding="utf-8")
    data: dict[str, list[dict[str, object]]] = json.loads(text)
    return {name: tuple(DefaultCfg.from_dict(c) for c in cfgs) or (DefaultCfg(),) for name, cfgs in data.items()}
