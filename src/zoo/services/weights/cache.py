"""The on-disk checkpoint cache: files appear only complete and verified, one writer per file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import attrs
from filelock import FileLock

# The folders zoo owns under the cache root; `clear` touches nothing else, so a mistyped
# ZOO_CACHE_DIR can never cost the user unrelated files.
_OWNED = ("urls", "hub", ".locks")
_LOCKS = ".locks"
_PART = ".part"


@attrs.frozen(kw_only=True)
class CacheEntry:
    """One cached checkpoint file."""

    key: PurePosixPath
    path: Path
    size: int


class Staged:
    """A temporary file beside its destination; the cache renames it into place on success."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self.file = file
        self.path = path

    def finish(self) -> None:
        """Flush, sync and close the file, so it can be read back before it is committed."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())  # a crash after the rename must not leave a short file in place
            self.file.close()


class WeightCache:
    """Checkpoint files under one root, by cache key."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: PurePosixPath) -> Path:
        """Where the file for key lives (whether or not it exists yet)."""
        return self.root.joinpath(*key.parts)

    def lock(self, key: PurePosixPath) -> FileLock:
        """The cross-process lock that serialises fetching key."""
        lock_dir = self.root / _LOCKS
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(lock_dir / ("--".join(key.parts) + ".lock"))

    @contextlib.contextmanager
    def staging(self, key: PurePosixPath) -> Iterator[Staged]:
        """A temp file beside key's path: renamed into place if the block succeeds, deleted if it raises.

        The rename is atomic, so readers see either no file or the whole verified file. Hold
        lock(key) around this so that only one process writes a given key.
        """
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=_PART)
        staged = Staged(os.fdopen(fd, "wb"), Path(tmp_name))
        try:
            yield staged
            staged.finish()
            os.replace(staged.path, dest)
        except BaseException:
            staged.file.close()
            staged.path.unlink(missing_ok=True)
            raise

    def remove(self, key: PurePosixPath) -> None:
        """Delete key's file if present (e.g. one that turned out unreadable)."""
        self.path(key).unlink(missing_ok=True)

    def entries(self) -> list[CacheEntry]:
        """Every complete cached file, sorted by key."""
        found: list[CacheEntry] = []
        for top in _OWNED:
            if top == _LOCKS or not (self.root / top).is_dir():
                continue
            for path in (self.root / top).rglob("*"):
                if path.is_file() and not path.name.endswith(_PART):
                    key = PurePosixPath(*path.relative_to(self.root).parts)
                    found.append(CacheEntry(key=key, path=path, size=path.stat().st_size))
        return sorted(found, key=lambda e: str(e.key))

    def clear(self) -> tuple[int, int]:
        """Delete every cached file (and partial downloads and locks); returns (files, bytes) removed."""
        entries = self.entries()
        for top in _OWNED:
            shutil.rmtree(self.root / top, ignore_errors=True)
        return len(entries), sum(e.size for e in entries)
