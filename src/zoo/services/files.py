"""Replacing files in a folder as one change: every file written beside, synced, then renamed into place."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

PART = ".part"


def replace_together(folder: Path, writers: Sequence[tuple[str, Callable[[Path], None]]]) -> None:
    """Write each (name, write) as folder/name: all of them replaced, or (on any error) none of them.

    write(path) fills a new temp file beside its destination. Once every file is written and synced
    they are renamed into place one by one, each old file kept by a hard link until all are in: a
    failure puts the old files back (and removes new ones that had none), and no temp file stays.
    """
    staged: list[tuple[Path, Path]] = []  # (temp, destination)
    try:
        for name, write in writers:
            dest = folder / name
            staged.append((_temp_beside(dest), dest))
            write(staged[-1][0])
            _sync_file(staged[-1][0])
        _commit(staged)
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    _sync_folder(folder)


def _commit(staged: Sequence[tuple[Path, Path]]) -> None:
    placed: list[tuple[Path, Path | None]] = []  # (destination, its old file's backup or None: it had none)
    try:
        for tmp, dest in staged:
            backup, linked = _backup(dest)
            try:
                os.replace(tmp, dest)
            except BaseException:
                if backup is not None:  # a failed rename leaves dest as it was, unless it was moved to backup
                    _undo(backup, dest, dest_intact=linked)
                raise
            placed.append((dest, backup))
    except BaseException:
        for dest, backup in reversed(placed):
            if backup is not None:
                _undo(backup, dest, dest_intact=False)
            else:
                with contextlib.suppress(OSError):
                    dest.unlink(missing_ok=True)
        raise
    for _, backup in placed:
        if backup is not None:
            with contextlib.suppress(OSError):
                backup.unlink()


def _undo(backup: Path, dest: Path, *, dest_intact: bool) -> None:
    """Put the old file (backup) back at dest; when dest still is the old file, just drop the second name."""
    with contextlib.suppress(OSError):  # a backup that cannot go back stays beside, never deleted
        if dest_intact:
            backup.unlink()
        else:
            os.replace(backup, dest)


def _backup(dest: Path) -> tuple[Path | None, bool]:
    """A second name for dest's current file and whether it is a hard link (else dest was renamed to it)."""
    if not dest.is_file():
        return None, False
    for _ in range(3):
        backup = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.old{PART}")
        try:
            os.link(dest, backup)
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            os.replace(dest, backup)  # dest is missing until the new file takes its place, a moment later
            return backup, False
        return backup, True
    raise FileExistsError(f"cannot find a free name beside {dest} to keep its old file")


def _temp_beside(dest: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=PART)
    os.close(fd)
    return Path(name)


def _sync_file(path: Path) -> None:
    # a crash after the rename must not leave a short file under the real name
    with path.open("r+b") as f:
        os.fsync(f.fileno())


def _sync_folder(folder: Path) -> None:
    # the renames themselves reach the disk; folders cannot be opened this way on Windows
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
