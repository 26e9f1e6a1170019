"""Regenerate src/zoo/archs/cfgs/<family>.json from the reference facts in shared/reference.

Usage: python tools/sync_cfgs.py [REFERENCE_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from zoo.archs.catalogue import FAMILIES  # noqa: E402


def main(argv: list[str]) -> int:
    ref = Path(argv[0]) if argv else ROOT.parent / "shared" / "reference" / "timm-1.0.31"
    out_dir = ROOT / "src" / "zoo" / "archs" / "cfgs"
    out_dir.mkdir(parents=True, exist_ok=True)
    for module, names in FAMILIES.items():
        family = module.rsplit(".", 1)[-1]
        data: dict[str, list[dict[str, object]]] = {}
        for name in names:
            facts = json.loads((ref / f"{name}.json").read_text())
            data[name] = list(facts["pretrained_cfgs"].values())
        path = out_dir / f"{family}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"{path.relative_to(ROOT)}: {len(data)} models, {sum(map(len, data.values()))} cfgs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
