"""Access to the reference facts in shared/reference (state_dict layouts, taps, cfgs)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """shared/reference beside the checkout, or $ZOO_REFERENCE_DIR."""
    env = os.environ.get("ZOO_REFERENCE_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "reference"


@functools.cache
def reference(name: str) -> dict[str, Any]:
    """The timm-1.0.31 facts for a model name; skips the test when the file is not there."""
    path = reference_dir() / "timm-1.0.31" / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"no reference facts at {path}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
