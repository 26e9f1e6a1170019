"""The on-disk checkpoint cache: files appear only complete and verified, one writer per file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import attrs
from filelock import FileLock

# What zoo writes under the cache root, recognised by its layout: `list` shows and `clear` deletes
# nothing else. ZOO_CACHE_DIR may be mistyped, or be HF_HOME or the Hugging Face cache itself (which
# has a `hub` folder and a `.locks` folder of its own): the user's and the hub's files must survive.
_URLS = "urls"  # urls/<16 hex digits of the url's sha256>/<file name>
_LOCKS = ".locks"  # <record name>.lock, one file a key
_DIGESTS = ".digests"  # <record name>.json, the verified sha256 of each file, so a cache hit need not re-hash it
_PART = ".part"
_URL_DIR_RE = re.compile(r"^[0-9a-f]{16}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the names sources.url_source gives files
_STAGED_RE = re.compile(r"^\.[A-Za-z0-9][A-Za-z0-9._-]*\.[A-Za-z0-9_]+\.part$")  # tempfile.mkstemp's, beside one
# record names: a key's parts joined by "--" (keys start urls/ or files/), or the sha256 of a long one
_RECORD_RE = re.compile(r"^(?:(?:urls|files)--[A-Za-z0-9._-]+|[0-9a-f]{64})$")
_CHUNK = 1 << 20
_MAX_RECORD_NAME = 200  # lock and digest records are named after the key; far below the usual 255
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(st: os.stat_result) -> list[int]:
    # what changes when the bytes may have: a remembered digest is trusted only while all of these hold
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _record_name(key: PurePosixPath, ext: str) -> str:
    name = "--".join(key.parts)
    if len(name.encode()) + len(ext) > _MAX_RECORD_NAME:
        name = hashlib.sha256(name.encode()).hexdigest()
    return name + ext


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
        return FileLock(lock_dir / _record_name(key, ".lock"))

    @contextlib.contextmanager
    def locked(self, key: PurePosixPath) -> Iterator[None]:
        """Hold key's lock for the block; a block that raises (nothing cached) leaves no lock file behind.

        A process already waiting on the removed file still gets it after this one, and one arriving
        later locks a new file, so both may download: harmless, as each publishes its verified
        file by an atomic rename. Only the saving of a second download is lost, and only after a failure.
        """
        lock = self.lock(key)
        with lock:
            try:
                yield
            except BaseException:
                with contextlib.suppress(OSError):  # Windows cannot delete an open file; it stays
                    Path(lock.lock_file).unlink(missing_ok=True)
                raise

    @contextlib.contextmanager
    def staging(self, key: PurePosixPath) -> Iterator[Staged]:
        """A temp file beside key's path: renamed into place if the block succeeds, deleted if it raises.

        The rename is atomic, so readers see either no file or the whole verified file. Hold
        locked(key) around this so that only one process writes a given key. A failure leaves no
        empty folder behind.
        """
        dest = self.path(key)
        staged = self._stage(dest)
        try:
            yield staged
            staged.finish()
            os.replace(staged.path, dest)
        except BaseException:
            staged.file.close()
            staged.path.unlink(missing_ok=True)
            _remove_if_empty(dest.parent)
            raise

    def _stage(self, dest: Path) -> Staged:
        for _ in range(3):
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=_PART)
            except FileNotFoundError:
                continue  # another key's failed download removed the shared folder just now
            return Staged(os.fdopen(fd, "wb"), Path(tmp_name))
        raise FileNotFoundError(f"{dest.parent} keeps disappearing")

    def remove(self, key: PurePosixPath) -> None:
        """Delete key's file (e.g. one whose bytes turned out wrong), its digest record and an emptied folder."""
        path = self.path(key)
        path.unlink(missing_ok=True)
        self._digest_record(key).unlink(missing_ok=True)
        _remove_if_empty(path.parent)

    def _digest_record(self, key: PurePosixPath) -> Path:
        return self.root / _DIGESTS / _record_name(key, ".json")

    def remember_digest(self, key: PurePosixPath, sha256: str) -> None:
        """Record the verified sha256 of key's file as it is now (size, mtime, ctime, inode)."""
        try:
            st = self.path(key).stat()
        except OSError:
            return  # removed meanwhile: there is nothing to remember
        self._write_record(key, sha256, st)

    def digest(self, key: PurePosixPath) -> str:
        """The sha256 of key's file: the remembered one while the file is unchanged, else hashed now."""
        return self._digest(key, self.path(key))

    def file_digest(self, path: Path) -> str:
        """The sha256 of a file outside the cache (a hub file), remembered the same way under its real path."""
        real = path.resolve()
        return self._digest(PurePosixPath("files", hashlib.sha256(str(real).encode()).hexdigest()[:32]), real)

    def remembered_digest(self, key: PurePosixPath) -> str | None:
        """The sha256 recorded for key's file when it was verified, while the file is unchanged since; else None."""
        try:
            return self._remembered(key, self.path(key).stat())
        except OSError:
            return None

    def _remembered(self, key: PurePosixPath, st: os.stat_result) -> str | None:
        try:
            data = json.loads(self._digest_record(key).read_text(encoding="utf-8"))
            remembered = data["sha256"] if data.get("stamp") == _stamp(st) else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # no record, or one that is not zoo's
        return remembered if isinstance(remembered, str) and _SHA256_RE.match(remembered) else None

    def _digest(self, key: PurePosixPath, path: Path) -> str:
        st = path.stat()
        remembered = self._remembered(key, st)
        if remembered is not None:
            return remembered
        sha256 = file_sha256(path)
        self._write_record(key, sha256, st)
        return sha256

    def _write_record(self, key: PurePosixPath, sha256: str, st: os.stat_result) -> None:
        record = self._digest_record(key)
        # a cache the user may read but not write still works: the next hit hashes again
        with contextlib.suppress(OSError):
            record.parent.mkdir(parents=True, exist_ok=True)
            tmp = record.with_name(f".{record.name}.{os.getpid()}.{threading.get_ident()}{_PART}")
            try:
                tmp.write_text(json.dumps({"sha256": sha256, "stamp": _stamp(st)}), encoding="utf-8")
                os.replace(tmp, record)
            finally:
                tmp.unlink(missing_ok=True)

    def entries(self) -> list[CacheEntry]:
        """Every complete cached file zoo wrote, sorted by key."""
        found = [
            CacheEntry(key=PurePosixPath(_URLS, path.parent.name, path.name), path=path, size=size)
            for path, size in self._owned_files(_URLS)
            if not path.name.endswith(_PART)
        ]
        return sorted(found, key=lambda e: str(e.key))

    def clear(self) -> tuple[int, int]:
        """Delete every file zoo wrote here (downloads, partial ones, locks, digest records) and nothing else.

        Returns the (files, bytes) of the complete downloads removed. zoo's folders go once empty.
        """
        entries = self.entries()
        for top in (_URLS, _LOCKS, _DIGESTS):
            for path, _ in self._owned_files(top):
                with contextlib.suppress(OSError):  # gone meanwhile, or a Windows file still open: it stays
                    path.unlink()
            for folder in _url_folders(self.root / top) if top == _URLS else ():
                _remove_if_empty(folder)
            _remove_if_empty(self.root / top)
        return len(entries), sum(e.size for e in entries)

    def _owned_files(self, top: str) -> list[tuple[Path, int]]:
        """The plain files under top with the names and places zoo gives its files, and their sizes."""
        base = self.root / top
        out: list[tuple[Path, int]] = []
        for folder in _url_folders(base) if top == _URLS else [base]:
            for path in _plain_files(folder):
                if _is_owned_name(top, path.name):
                    with contextlib.suppress(OSError):  # removed meanwhile
                        out.append((path, path.lstat().st_size))
        return out


def _url_folders(base: Path) -> list[Path]:
    """The urls/<16 hex digits> folders (real ones: a link leads to files zoo did not write)."""
    try:
        children = list(base.iterdir()) if base.is_dir() and not base.is_symlink() else []
    except OSError:
        return []
    return [p for p in children if _URL_DIR_RE.match(p.name) and p.is_dir() and not p.is_symlink()]


def _plain_files(folder: Path) -> list[Path]:
    """The regular files directly in folder (no links: the Hugging Face cache's snapshots are links)."""
    try:
        if not folder.is_dir() or folder.is_symlink():
            return []
        return [p for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
    except OSError:
        return []


def _is_owned_name(top: str, name: str) -> bool:
    """Whether a file in top has a name zoo gives: a download or a staged one, a lock, a digest record."""
    if top == _URLS:
        return bool(_FILE_RE.match(name) or _STAGED_RE.match(name))
    ext = ".lock" if top == _LOCKS else ".json"
    if name.startswith(".") and name.endswith(_PART):  # a record being written: .<record>.<pid>.<thread>.part
        record = name[1:].rsplit(".", 3)[0]
        return record.endswith(ext) and bool(_RECORD_RE.match(record[: -len(ext)]))
    return name.endswith(ext) and bool(_RECORD_RE.match(name[: -len(ext)]))


def _remove_if_empty(folder: Path) -> None:
    # another writer's temp file (or a sibling key) keeps the folder, and rmdir then refuses
    with contextlib.suppress(OSError):
        folder.rmdir()
