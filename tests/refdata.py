"""The reference facts the tests use (state_dict layouts, taps, cfgs), kept in tests/reference.

tools/sync_reference.py copies them from shared/reference, so a clean clone runs every test. A
missing facts file is a failure, never a skip: a parity test that does not run proves nothing.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = ROOT / "tests" / "reference"
VERSIONS = ("timm-1.0.31", "timm-0.4.12")


def reference_path(name: str) -> Path | None:
    """The facts file for a model name (timm-1.0.31 first, then names later versions dropped)."""
    for version in VERSIONS:
        path = REFERENCE_DIR / version / f"{name}.json"
        if path.is_file():
            return path
    return None


def reference(name: str) -> dict[str, Any]:
    """The reference facts for a model name (a fresh copy: a test may change its own); AssertionError if missing."""
    data: dict[str, Any] = json.loads(_reference_text(name))
    return data


@functools.cache
def _reference_text(name: str) -> str:
    path = reference_path(name)
    assert path is not None, f"no reference facts for {name!r} in {REFERENCE_DIR}; run tools/sync_reference.py"
    return path.read_text()


def pruned_layout(name: str) -> str:
    """The published pruned channel layout of a model name (the `name:[shape]***...` text)."""
    path = REFERENCE_DIR / f"pruned-{name}.txt"
    assert path.is_file(), f"no pruned layout for {name!r} in {REFERENCE_DIR}; run tools/sync_reference.py"
    return path.read_text().strip()
