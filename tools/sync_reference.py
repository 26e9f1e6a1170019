"""Copy the reference facts the tests use from shared/reference into tests/reference.

Usage: python tools/sync_reference.py [SHARED_REFERENCE_DIR]

Every registered name (zoo.list_models(): the built-in catalogue) gets its facts file (timm-1.0.31
first, timm-0.4.12 for the names later versions dropped), and every published pruned layout is copied,
so a clean clone without ../shared runs every test. A facts file of a name no longer registered is
removed. Names that have no facts anywhere are listed and make it fail: the every-name test tier
(tests/every_name) fails for them too.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import zoo  # noqa: E402

VERSIONS = ("timm-1.0.31", "timm-0.4.12")


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else ROOT.parent / "shared" / "reference"
    dest = ROOT / "tests" / "reference"
    if not src.is_dir():
        print(f"no reference directory at {src}", file=sys.stderr)
        return 2
    names = zoo.list_models()
    missing: list[str] = []
    copied = 0
    for version in VERSIONS:
        for stale in sorted((dest / version).glob("*.json")):
            if stale.stem not in names:
                stale.unlink()
                print(f"removed {stale.relative_to(ROOT)}: {stale.stem} is not registered")
    for name in names:
        for version in VERSIONS:
            facts = src / version / f"{name}.json"
            if facts.is_file():
                (dest / version).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(facts, dest / version / facts.name)
                copied += 1
                break
        else:
            missing.append(name)
    for layout in sorted(src.glob("pruned-*.txt")):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(layout, dest / layout.name)
        copied += 1
    readme = src / "README.md"
    if readme.is_file():
        shutil.copyfile(readme, dest / "README.md")
    print(f"{dest.relative_to(ROOT)}: {copied} files for {len(names)} catalogue names")
    if missing:
        print(f"no reference facts for: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
