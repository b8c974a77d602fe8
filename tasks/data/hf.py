"""Hugging Face ``datasets``: a ``save_to_disk`` folder, an ``imagefolder`` with metadata, or a
dataset name (``org/name``) already in the local datasets cache (loaded offline, never downloaded).

Images stored inside Arrow files are written once into a content-addressed folder next to the
dataset's cache (``<work_dir>``-independent: under the dataset folder's ``.bifocal-images``
sibling in the work cache), so every later stage works with plain file paths.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from tasks.config import DatasetConfig
from tasks.data.base import DataError, RawTable, register_source


def _image_cache_dir() -> Path:
    home = Path(os.environ.get("BIFOCAL_HOME", Path.cwd() / ".bifocal"))
    return home / "cache" / "hf-images"


def _materialize(value: object, dataset_root: Path, cache: Path) -> str | None:
    """An HF Image cell (decode=False) -> a path relative to ``cache`` or ``dataset_root``."""
    if not isinstance(value, dict):
        return None
    data, path = value.get("bytes"), value.get("path")
    if data:
        suffix = Path(path).suffix if path else ".img"
        name = hashlib.sha256(data).hexdigest() + suffix
        target = cache / name
        if not target.exists():
            tmp = target.with_suffix(target.suffix + f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return name
    if path:
        return os.path.relpath(Path(path).resolve(), dataset_root.resolve())
    return None


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _load_folder(folder: Path):
    import datasets

    try:
        if (folder / "dataset_dict.json").exists() or (folder / "dataset_info.json").exists() \
                or (folder / "state.json").exists():
            return datasets.load_from_disk(str(folder))
        return datasets.load_dataset("imagefolder", data_dir=str(folder))
    except Exception as error:  # datasets raises many types for unreadable folders
        raise DataError(f"cannot load Hugging Face dataset from {folder}: {error}") from None


@contextmanager
def _offline() -> Iterator[None]:
    """Force ``datasets`` offline whatever the environment said when it was imported."""
    import datasets

    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


def _load_cached(name: str, revision: str | None):
    """A dataset by Hub name from the local datasets cache; offline, so nothing is downloaded."""
    import datasets

    try:
        with _offline():
            loaded = datasets.load_dataset(name, revision=revision)
    except Exception as error:  # not cached: ConnectionError, FileNotFoundError, ...
        raise DataError(
            f"{name!r} is neither a dataset folder nor a Hugging Face dataset in the local "
            f"datasets cache ({datasets.config.HF_DATASETS_CACHE}); nothing is downloaded. Load "
            "it once where the Hub is reachable (same HF_HOME / HF_DATASETS_CACHE), or "
            f"save_to_disk a copy and set dataset.path to that folder. ({error})"
        ) from None
    files = [f["filename"] for split in _splits(loaded) for f in split.cache_files]
    if revision and not any(f"/{revision}/" in Path(f).as_posix() for f in files):
        raise DataError(f"Hugging Face dataset {name!r} is cached, but not at revision "
                        f"{revision!r} (offline loading uses the latest cached copy: {files[:1]})")
    return loaded


def _splits(loaded) -> list:
    import datasets

    return list(loaded.values()) if isinstance(loaded, datasets.DatasetDict) else [loaded]


def _open(config: DatasetConfig) -> tuple[object, Path, str]:
    """The loaded dataset, the folder file-based images must lie in, and the source URI."""
    import datasets

    folder = Path(config.path).expanduser()
    if folder.exists():
        return _load_folder(folder), folder, str(folder.resolve())
    if not HUB_NAME.fullmatch(config.path):
        raise DataError(f"dataset folder not found: {folder}")
    root = Path(config.root).expanduser() if config.root else datasets.config.HF_DATASETS_CACHE
    loaded = _load_cached(config.path, config.revision)
    # an https URL: MLflow has a dataset source type for it (none for hf://)
    return loaded, Path(root), f"https://huggingface.co/datasets/{config.path}"


@register_source("hf")
def load_hf(config: DatasetConfig) -> RawTable:
    import datasets

    loaded, folder, source_uri = _open(config)
    if isinstance(loaded, datasets.DatasetDict):
        split = config.split or ("test" if "test" in loaded else next(iter(loaded)))
        if split not in loaded:
            raise DataError(f"split {split!r} not in dataset; splits: {list(loaded)}")
        loaded = loaded[split]
    image_col = config.columns.image
    assert isinstance(loaded, datasets.Dataset)
    if image_col not in loaded.column_names:
        raise DataError(f"column {image_col!r} not in dataset columns {loaded.column_names}")
    if config.limit is not None:
        loaded = loaded.select(range(min(config.limit, len(loaded))))
    loaded = loaded.cast_column(image_col, datasets.Image(decode=False))
    cache = _image_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    rows: pd.DataFrame = loaded.to_pandas()
    has_bytes = rows[image_col].map(lambda v: isinstance(v, dict) and bool(v.get("bytes")))
    root = cache if has_bytes.all() else folder
    rows[image_col] = [_materialize(v, folder, cache) for v in rows[image_col]]
    if has_bytes.any() and not has_bytes.all():
        raise DataError("mixed embedded and file images are not supported in one dataset")
    return RawTable(rows=rows, root=root, source_uri=source_uri)
