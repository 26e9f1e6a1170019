"""Paths as users type them."""

from __future__ import annotations

from pathlib import Path

from zoo.domain.errors import InvalidValueError


def expand_user(text: str, what: str) -> Path:
    """text as a Path with a leading ~ or ~user expanded; InvalidValueError naming what when that user is unknown."""
    try:
        return Path(text).expanduser()
    except RuntimeError as e:  # pathlib's "Could not determine home directory"
        raise InvalidValueError(f"{what}={text!r} is invalid: its ~ names no user's home directory ({e})") from None
