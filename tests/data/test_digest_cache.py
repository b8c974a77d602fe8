"""The image digest cache (tasks/data/digests.py): unchanged files are not read again, changed
ones are, and the digests are those of a plain ``hashlib.sha256`` of the file bytes."""

import hashlib
import json
import os
from pathlib import Path

import pytest

import tasks.data.base as base
from tasks.config import DatasetConfig
from tasks.data import load_dataset
from tasks.data.digests import DigestCache
from tests.helpers import write_dataset


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image file the data stage reads (``check_image`` reads through this name)."""
    seen: list[str] = []
    real = base.read_image_file

    def counting(path):
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(base, "read_image_file", counting)
    return seen


def load(manifest: Path, cache: Path | None):
    digests = DigestCache(cache) if cache is not None else None
    try:
        return load_dataset(DatasetConfig(path=str(manifest)), digests)
    finally:
        if digests is not None:
            digests.close()


def write_bmp(path: Path, color: tuple[int, int, int]) -> None:
    """A 16x16 BMP: the file size depends on the size only, so a recolour keeps the size."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path, format="BMP")


def test_second_load_reads_no_image_and_digests_equal_hashlib(tmp_path: Path,
                                                              reads: list[str]):
    manifest = write_dataset(tmp_path / "data")
    cache = tmp_path / "work" / "cache" / "digests.sqlite"
    plain = load(manifest, None)
    assert len(reads) == 8
    first = load(manifest, cache)
    assert len(reads) == 16  # the empty cache: every image is read and checked
    second = load(manifest, cache)
    assert len(reads) == 16  # nothing changed: no image file read at all
    for item in second.items.itertuples():
        assert item.image_sha256 == hashlib.sha256(Path(item.image_path).read_bytes()).hexdigest()
    assert plain.digest == first.digest == second.digest
    assert plain.items.equals(second.items)


def test_touched_or_rewritten_file_is_checked_again(tmp_path: Path, reads: list[str]):
    root = tmp_path / "data"
    for n, color in enumerate([(200, 0, 0), (0, 200, 0)]):
        write_bmp(root / f"{n}.bmp", color)
    manifest = root / "data.jsonl"
    manifest.write_text("".join(json.dumps({"id": str(n), "image": f"{n}.bmp",
                                            "captions": ["a square"]}) + "\n" for n in range(2)))
    cache = tmp_path / "cache.sqlite"
    before = load(manifest, cache)
    target = root / "0.bmp"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched only
    reads.clear()
    touched = load(manifest, cache)
    assert reads == [str(target.resolve())]
    assert touched.digest == before.digest

    size = target.stat().st_size
    write_bmp(target, (0, 0, 200))  # same size, other bytes, new mtime
    assert target.stat().st_size == size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))
    reads.clear()
    rewritten = load(manifest, cache)
    assert reads == [str(target.resolve())]
    new = hashlib.sha256(target.read_bytes()).hexdigest()
    assert rewritten.items.set_index("item_id").loc["0", "image_sha256"] == new
    assert rewritten.digest != before.digest and rewritten.digest == load(manifest, None).digest


def test_mtime_restored_after_a_rewrite_is_still_a_miss(tmp_path: Path, reads: list[str]):
    """``touch -r``-style restores keep mtime but not ctime: the entry does not match."""
    root = tmp_path / "data"
    write_bmp(root / "0.bmp", (200, 0, 0))
    manifest = root / "data.jsonl"
    manifest.write_text(json.dumps({"id": "0", "image": "0.bmp", "captions": ["x"]}) + "\n")
    cache = tmp_path / "cache.sqlite"
    load(manifest, cache)
    target = root / "0.bmp"
    stat = target.stat()
    write_bmp(target, (0, 0, 200))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    if target.stat().st_ctime_ns == stat.st_ctime_ns:
        pytest.skip("file system without a distinct ctime")
    reads.clear()
    again = load(manifest, cache)
    assert len(reads) == 1
    assert again.items.loc[0, "image_sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_rejected_images_are_checked_every_time(tmp_path: Path, reads: list[str]):
    manifest = write_dataset(tmp_path / "data", n=3)
    (tmp_path / "data" / "images" / "001.png").write_bytes(b"not an image")
    cache = tmp_path / "cache.sqlite"
    first = load(manifest, cache)
    reads.clear()
    second = load(manifest, cache)
    assert len(reads) == 1 and reads[0].endswith("001.png")
    assert list(first.rejects["reason"]) == list(second.rejects["reason"])
    assert second.rejects.loc[0, "reason"].startswith("not a readable image")
    assert len(second.items) == 2


def test_unusable_cache_file_is_skipped_with_a_warning(tmp_path: Path, reads: list[str],
                                                       caplog: pytest.LogCaptureFixture):
    manifest = write_dataset(tmp_path / "data", n=2)
    broken = tmp_path / "cache.sqlite"
    broken.write_bytes(b"this is not a sqlite database" * 100)
    data = load(manifest, broken)
    assert len(reads) == 2 and len(data.items) == 2
    assert data.digest == load(manifest, None).digest
    assert "digest cache" in caplog.text


def test_load_data_step_keeps_the_cache_under_the_work_dir(tmp_path: Path, reads: list[str]):
    from tasks.config import EvalConfig
    from tasks.steps import load_data

    manifest = write_dataset(tmp_path / "data", n=2)
    config = EvalConfig.model_validate({"model": {"path": str(tmp_path / "model")},
                                        "dataset": {"path": str(manifest)},
                                        "work_dir": str(tmp_path / "work")})
    first = load_data.fn(config, tmp_path / "run1")
    second = load_data.fn(config, tmp_path / "run2")
    assert (tmp_path / "work" / "cache" / "digests.sqlite").is_file()
    assert len(reads) == 2 and first.digest == second.digest
