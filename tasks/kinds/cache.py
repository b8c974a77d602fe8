"""A fingerprint-keyed folder cache: an entry is complete once its folder exists.

Entries are written into a temporary sibling folder and renamed into place, so a crash never
leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


class FolderCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Path | None:
        path = self.path(key)
        return path if path.is_dir() else None

    def put(self, key: str, write: Callable[[Path], None]) -> Path:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=target.parent))
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
