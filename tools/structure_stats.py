"""Files and lines of src/zoo per layer, and the import edges between layers, at a checkout.

Usage: python tools/structure_stats.py [ROOT]   (ROOT: a checkout, default this one; for another commit,
`git archive REV src | tar -x -C DIR` and pass DIR). Imports are read with ast, TYPE_CHECKING ones included.
"""

from __future__ import annotations

import ast
import collections
import sys
from pathlib import Path

LAYERS = ("domain", "archs", "services", "cli", "data")


def layer(module: str) -> str:
    """The layer of a dotted zoo module: a package under zoo, 'api', a public module, or the root."""
    parts = module.split(".")
    if len(parts) < 2:
        return "zoo(root)"
    if parts[1] in LAYERS:
        return parts[1]
    if parts[1] in ("api", "inference"):
        return "api"
    return f"public:{parts[1]}"


def imported(tree: ast.AST) -> list[str]:
    """The absolute zoo modules a parsed file imports."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [m for m in found if m == "zoo" or m.startswith("zoo.")]


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).resolve().parents[1]) / "src" / "zoo"
    files: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    edges: collections.Counter[tuple[str, str]] = collections.Counter()
    big: list[tuple[str, int]] = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        here, text = layer(module), path.read_text()
        count = len(text.splitlines())
        files[here] += 1
        lines[here] += count
        if count > 600:
            big.append((module, count))
        for target in imported(ast.parse(text)):
            if layer(target) != here:
                edges[(here, layer(target))] += 1
    for name in sorted(files):
        print(f"{name:18s} {files[name]:3d} files {lines[name]:6d} lines")
    print(f"total {sum(files.values())} files, {sum(lines.values())} lines; over 600 lines: {big or 'none'}")
    for (a, b), n in sorted(edges.items()):
        print(f"  {a} -> {b} ({n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
