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
from collections.abc import Mapping, Sequence
from importlib import resources

from zoo.domain.values import DefaultCfg, FeatureCfg, ModelConstructor, ModelSpec

__all__ = ["FAMILIES", "family_cfgs", "family_specs", "load_family", "pruned_layout"]

_PACKAGE = "zoo.archs"


@functools.cache
def _cfg_file(family: str) -> Mapping[str, Sequence[Mapping[str, object]]]:
    # parsed once per process: the catalogue reads its names, the family's module its cfgs (neither changes it)
    text = resources.files(_PACKAGE).joinpath("cfgs").joinpath(f"{family}.json").read_text(encoding="utf-8")
    data: dict[str, list[dict[str, object]]] = json.loads(text)
    return data


def _families() -> dict[str, tuple[str, ...]]:
    files = sorted(f.name for f in resources.files(_PACKAGE).joinpath("cfgs").iterdir() if f.name.endswith(".json"))
    families = [name.removesuffix(".json") for name in files]
    return {f"{_PACKAGE}.{family}": tuple(_cfg_file(family)) for family in families}


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
    return resources.files(_PACKAGE).joinpath("pruned").joinpath(f"{name}.txt").read_text(encoding="utf-8")


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
