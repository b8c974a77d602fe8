"""A fingerprint-keyed folder cache: an entry is complete once its folder exists.

Entries are written into a temporary sibling folder and renamed into place, so a crash never
leaves a half-written entry that a later run would trust. The staging folder's name carries its
writer (``.<key[:12]>-<pid>@<host>~<pid namespace>-<random>``): a process killed while writing
leaves it behind, and the next ``FolderCache`` on that root (or ``bifocal runs cleanup
--work-dir``) removes it once its writer is gone, or, for a writer that cannot be checked from
here (another machine, an older name without the pid), once nothing in it changed for
``STALE_STAGING_S``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from tasks.processes import host_name, pid_namespace, process_alive

STALE_STAGING_S = 24 * 3600.0  # a staging folder whose writer cannot be checked: removed after
STAGING = re.compile(r"^\.\w{1,12}-(?:(?P<pid>\d+)@(?P<host>[\w.\-]+?)(?:~(?P<ns>\d*))?-)?"
                     r"[a-z0-9_]+$")


def _host() -> str:
    return re.sub(r"[^\w.\-]", "_", host_name())


def staging_prefix(key: str) -> str:
    return f".{key[:12]}-{os.getpid()}@{_host()}~{pid_namespace()}-"


def _last_change(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for path in folder.rglob("*"):
        with suppress(OSError):  # removed meanwhile
            times.append(path.stat().st_mtime)
    return max(times)


def stale_staging(root: Path, max_age_s: float = STALE_STAGING_S) -> list[Path]:
    """Staging folders under ``root`` whose writer is dead: a process of this machine that is
    gone, or (writer unknown or elsewhere) no change for ``max_age_s``. This process's own
    staging folders are never stale."""
    root = Path(root)
    if not root.is_dir():
        return []
    stale, now, own, here = [], time.time(), os.getpid(), (_host(), pid_namespace())
    for bucket in root.iterdir():
        if not bucket.is_dir() or bucket.name.startswith("."):
            continue
        for folder in bucket.iterdir():
            match = STAGING.match(folder.name)
            if match is None or not folder.is_dir():
                continue
            pid, host = match["pid"], match["host"]
            try:
                if pid and (host, match["ns"] or "") == here:
                    if int(pid) != own and not process_alive(int(pid)):
                        stale.append(folder)
                elif now - _last_change(folder) > max_age_s:
                    stale.append(folder)
            except OSError:  # removed meanwhile by another process
                continue
    return stale


def remove_stale_staging(root: Path, max_age_s: float = STALE_STAGING_S, *,
                         dry_run: bool = False) -> list[Path]:
    """Remove (or with ``dry_run`` only list) the stale staging folders under ``root``."""
    folders = stale_staging(root, max_age_s)
    if not dry_run:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    return folders


class FolderCache:
    def __init__(self, root: Path, stale_after_s: float = STALE_STAGING_S) -> None:
        self.root = Path(root)
        remove_stale_staging(self.root, stale_after_s)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Path | None:
        path = self.path(key)
        return path if path.is_dir() else None

    def put(self, key: str, write: Callable[[Path], None]) -> Path:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=staging_prefix(key), dir=target.parent))
        try:
            write(staging)
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():  # not a concurrent writer winning the race
                    raise
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target
