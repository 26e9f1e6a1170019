"""Extract the reference library's parameter groups into tests/facts/param_groups.json.

Run by hand, never in CI, against a throwaway timm install outside the repository, e.g.:

    pip install --target /tmp/timm-lib --no-deps timm==1.0.31
    PYTHONPATH=src:/tmp/timm-lib python tools/extract_param_groups.py

For every registered zoo name and both coarse flags it records timm 1.0.31's ordered parameter
groups (group_parameters over model.group_matcher(coarse)) and no_weight_decay() names. Models are
built on the meta device, so nothing is allocated. Facts, per name:

- names_sha256: sha256 of the parameter names in named_parameters order, one per line; the groups
  index into that order, so a zoo model is compared only once its names and order are the same.
- num_params: how many parameters that is.
- fine / coarse: the group of each parameter as runs, [group, run length, group, run length, ...];
  groups are numbered in the reference's order (the layer id of layer-wise lr decay).
- no_weight_decay: what the model's no_weight_decay() returns, sorted ([] where it has none).
- matcher_of (only for a name timm 1.0.31 does not register): the timm name whose group_matcher was
  applied to the zoo model's own parameter names, since no reference model of that name exists.

timm is imported inside main() and typed as Any, so mypy and ruff pass without it installed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "facts" / "param_groups.json"
# zoo names timm 1.0.31 dropped (they come from timm 0.4.12, before group_matcher existed): the family
# sibling whose matcher stands in for the reference
SIBLINGS = {
    "cspdarknet53_iabn": "cspdarknet53",
    "cspresnext50_iabn": "cspresnext50",
    "densenet121d": "densenet121",
    "densenet264": "densenet264d",
}


def runs(groups: list[list[str]], names: list[str]) -> list[int]:
    """Each name's group index as [group, run length, ...] in names' order."""
    where = {n: g for g, members in enumerate(groups) for n in members}
    assert set(where) == set(names), "the groups do not cover the parameters exactly"
    out: list[int] = []
    for name in names:
        g = where[name]
        if out and out[-2] == g:
            out[-1] += 1
        else:
            out += [g, 1]
    return out


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    torch: Any = importlib.import_module("torch")
    timm: Any = importlib.import_module("timm")
    timm_models: Any = importlib.import_module("timm.models")
    zoo: Any = importlib.import_module("zoo")
    facts: dict[str, Any] = {"reference": f"timm {timm.__version__}", "models": {}}
    for name in zoo.list_models():
        source = SIBLINGS.get(name, name)
        with torch.device("meta"):
            ref = timm.create_model(source, pretrained=False)
            target = ref if source == name else zoo.create_model(name)
        names = [n for n, _ in target.named_parameters()]
        entry: dict[str, Any] = {
            "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
            "num_params": len(names),
        }
        for key, coarse in (("fine", False), ("coarse", True)):
            matcher = ref.group_matcher(coarse=coarse)
            by_layer = timm_models.group_parameters(target, matcher)
            entry[key] = runs([by_layer[i] for i in sorted(by_layer)], names)
        nwd = ref.no_weight_decay() if hasattr(ref, "no_weight_decay") else set()
        entry["no_weight_decay"] = sorted(nwd)
        if source != name:
            entry["matcher_of"] = source
        facts["models"][name] = entry
        print(name, len(names), max(entry["fine"][::2]) + 1, max(entry["coarse"][::2]) + 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # one model per line: small, and a change shows as the lines of the models it touches
    models = ",\n".join(f"  {json.dumps(n)}: {json.dumps(e, sort_keys=True)}" for n, e in facts["models"].items())
    OUT.write_text(f'{{"reference": {json.dumps(facts["reference"])}, "models": {{\n{models}\n}}}}\n')
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
