"""The built-in catalogue: its families, each family's names and published-weight cfgs, and the specs built on them.

Each family has a module (zoo.archs.<family>, defining MODEL_SPECS) and a cfg file (cfgs/<family>.json,
package data) whose keys are the family's model names, in order: the one list of them. FAMILIES is read
from the cfg files alone, so listing names imports no architecture module; family_specs refuses a module
whose names differ from its cfg file's, and a test checks FAMILIES against the specs the modules define.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import Mapping, Sequence

from zoo.domain.values import DefaultCfg, FeatureCfg, ModelConstructor, ModelSpec

__all__ = ["FAMILIES", "family_cfgs", "family_specs", "load_family", "pruned_layout"]

# package data beside this module, read with os and open: importlib.resources would add some 10 ms of imports
# (pathlib, zipfile, tempfile) to the first list_models
_CFGS = os.path.join(os.path.dirname(__file__), "cfgs")
_PRUNED = os.path.join(os.path.dirname(__file__), "pruned")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


@functools.cache
def _cfg_file(family: str) -> Mapping[str, Sequence[Mapping[str, object]]]:
    # parsed once per process: the catalogue reads its names, the family's module its cfgs (neither changes it)
    data: dict[str, list[dict[str, object]]] = json.loads(_read(os.path.join(_CFGS, f"{family}.json")))
    return data


def _families() -> dict[str, tuple[str, ...]]:
    families = sorted(name.removesuffix(".json") for name in os.listdir(_CFGS) if name.endswith(".json"))
    return {f"zoo.archs.{family}": tuple(_cfg_file(family)) for family in families}


# family module -> its model names (its cfg file's keys), for every cfg file the package ships
FAMILIES: dict[str, tuple[str, ...]] = _families()


def load_family(module: str) -> Sequence[ModelSpec]:
    """Import a family module and return the specs it defines (its MODEL_SPECS)."""
    specs: Sequence[ModelSpec] = importlib.import_module(module).MODEL_SPECS
    return specs


def family_cfgs(family: str) -> dict[str, tuple[DefaultCfg, ...]]:
    """Model name -> its DefaultCfgs (default first), read from cfgs/<family>.json."""
    return {
        name: tuple(DefaultCfg.from_dict(c) for c in cfgs) or (DefaultCfg(),)
        for name, cfgs in _cfg_file(family).items()
    }


def pruned_layout(name: str) -> str:
    """The channel layout a pruned name is built at, shipped as package data (pruned/<name>.txt)."""
    return _read(os.path.join(_PRUNED, f"{name}.txt"))


def family_specs(
    module: str, constructor: ModelConstructor, archs: Mapping[str, Mapping[str, object]], feature_cfg: FeatureCfg
) -> tuple[ModelSpec, ...]:
    """One ModelSpec per name of a family's cfg file, in its order: the module's arguments for it, its cfgs.

    archs (name -> constructor arguments) must name exactly the cfg file's models: a name in one and
    not the other is a bug in the family, raised as a RuntimeError on import.
    """
    cfgs = family_cfgs(module.rsplit(".", 1)[-1])
    if set(archs) != set(cfgs):
        raise RuntimeError(
            f"{module}: its architectures and its cfg file name different models: "
            f"without cfgs {sorted(set(archs) - set(cfgs))}, without an architecture {sorted(set(cfgs) - set(archs))}"
        )
    return tuple(
        ModelSpec(
            name=name,
            family=module,
            constructor=constructor,
            model_args=archs[name],
            default_cfgs=default_cfgs,
            feature_cfg=feature_cfg,
        )
        for name, default_cfgs in cfgs.items()
    )
