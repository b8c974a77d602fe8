from pathlib import Path

import pytest

from tasks.kinds.cache import FolderCache


def test_put_then_get_and_failed_write_leaves_nothing(tmp_path: Path):
    cache = FolderCache(tmp_path)
    assert cache.get("ab" * 32) is None
    path = cache.put("ab" * 32, lambda folder: (folder / "x.npy").write_bytes(b"1"))
    assert cache.get("ab" * 32) == path and (path / "x.npy").read_bytes() == b"1"

    def boom(folder: Path) -> None:
        (folder / "partial").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.put("cd" * 32, boom)
    assert cache.get("cd" * 32) is None
    assert not any(p.name.startswith(".") for p in (tmp_path / "cd").iterdir())
