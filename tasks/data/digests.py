"""The image digest cache: what the data stage learnt about an image file, kept across runs.

An entry says: the regular file at this resolved path, with exactly this size, ``mtime_ns``,
``ctime_ns`` and inode, was read, passed the image check (``tasks.data.base.check_image``: size
limit, header, pixel limit, Pillow ``verify``) and its bytes hash to this sha256. It is used only
when a fresh ``os.stat`` of the path matches all four values exactly and it was written by the
same checker (``CHECKER``: Pillow version and the image limits); anything else is a miss, and a
miss is checked and hashed as if there were no cache. Only passing images are stored: a rejected
image is checked again on every run, so its reason is always current.

Why the check is cached too, not only the hash: on the benchmark's images (224-px PNGs) Pillow's
open + ``verify`` costs about 30x the sha256 and the file read about 10x, so caching the hash
alone would save almost nothing (README text: /tmp/helpers/readme_gpu_knobs.md).

Storage: one SQLite file (``<work_dir>/cache/digests.sqlite``, WAL journal), so one writer at a
time plus any number of readers is safe, across processes too. An entry is written only when a
second ``stat`` after the check still gives the key read before it (a file rewritten while it
was read is not stored). A cache that cannot be opened or read (read-only folder, corrupt file)
is skipped with a warning: the data stage then works as without a cache.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.io import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

LOG = logging.getLogger(__name__)
FILE_NAME = "digests.sqlite"
_SCHEMA = """CREATE TABLE IF NOT EXISTS digests (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, checker TEXT NOT NULL,
    sha256 TEXT NOT NULL)"""
_LOOKUP_CHUNK = 500  # paths per SELECT (SQLite's host-parameter limit is 32,766)


def checker_version() -> str:
    """What decides whether a file passes the check: Pillow's version and the image limits."""
    import PIL

    return f"v1|Pillow {PIL.__version__}|{MAX_IMAGE_BYTES}|{MAX_IMAGE_PIXELS}"


@dataclass(frozen=True)
class FileKey:
    """A file's identity as ``os.stat`` sees it; equal keys mean the cache entry may be used."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int


def file_key(path: Path | str) -> FileKey | None:
    """The key of a regular file of at most ``MAX_IMAGE_BYTES``; None for anything else (a
    missing file, a directory, a FIFO, a file over the limit): those are never looked up."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_IMAGE_BYTES:
        return None
    return FileKey(str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


class DigestCache:
    """sha256 of already checked image files, keyed by ``FileKey`` (see the module docstring).

    Use from one thread: ``lookup`` before the checks, ``store`` after them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.checker = checker_version()
        self._db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as error:
            self._give_up("cannot be opened", error)

    @classmethod
    def under(cls, work_dir: str | Path) -> DigestCache:
        """The cache of a work folder: ``<work_dir>/cache/digests.sqlite``."""
        return cls(Path(work_dir).expanduser() / "cache" / FILE_NAME)

    def _give_up(self, what: str, error: BaseException) -> None:
        LOG.warning("image digest cache %s %s (%s); images are checked without it",
                    self.path, what, error)
        if self._db is not None:
            self._db.close()
        self._db = None

    def lookup(self, keys: Sequence[FileKey | None]) -> dict[int, str]:
        """Position -> sha256 for every key whose entry matches it exactly."""
        wanted = {key.path: key for key in keys if key is not None}
        found: dict[str, str] = {}
        if self._db is None or not wanted:
            return {}
        names = list(wanted)
        try:
            for start in range(0, len(names), _LOOKUP_CHUNK):
                chunk = names[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    "SELECT path, size, mtime_ns, ctime_ns, inode, checker, sha256 FROM digests "
                    f"WHERE path IN ({marks})", chunk).fetchall()
                for path, size, mtime_ns, ctime_ns, inode, checker, sha256 in rows:
                    if checker == self.checker and \
                            wanted[path] == FileKey(path, size, mtime_ns, ctime_ns, inode):
                        found[path] = sha256
        except sqlite3.Error as error:
            self._give_up("cannot be read", error)
            return {}
        return {n: found[key.path] for n, key in enumerate(keys)
                if key is not None and key.path in found}

    def store(self, entries: Iterable[tuple[FileKey, str]]) -> None:
        """Record checked files (replacing older entries of the same paths), in one
        transaction."""
        rows = [(key.path, key.size, key.mtime_ns, key.ctime_ns, key.inode, self.checker, sha)
                for key, sha in entries]
        if self._db is None or not rows:
            return
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as error:
            self._give_up("cannot be written", error)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
