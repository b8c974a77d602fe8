"""Hugging Face ``datasets`` folders: ``save_to_disk`` output or an ``imagefolder`` with metadata.

Images stored inside Arrow files are written once into a content-addressed folder next to the
dataset's cache (``<work_dir>``-independent: under the dataset folder's ``.bifocal-images``
sibling in the work cache), so every later stage works with plain file paths.
"""

from __future__ import annotations

import hashlib
import os
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


@register_source("hf")
def load_hf(config: DatasetConfig) -> RawTable:
    import datasets

    folder = Path(config.path).expanduser()
    if not folder.exists():
        raise DataError(f"dataset folder not found: {folder}")
    try:
        if (folder / "dataset_dict.json").exists() or (folder / "dataset_info.json").exists() \
                or (folder / "state.json").exists():
            loaded = datasets.load_from_disk(str(folder))
        else:
            loaded = datasets.load_dataset("imagefolder", data_dir=str(folder))
    except Exception as error:  # datasets raises many types for unreadable folders
        raise DataError(f"cannot load Hugging Face dataset from {folder}: {error}") from None
    if isinstance(loaded, datasets.DatasetDict):
        split = config.split or ("test" if "test" in loaded else next(iter(loaded)))
        if split not in loaded:
            raise DataError(f"split {split!r} not in dataset; splits: {list(loaded)}")
        loaded = loaded[split]
    image_col = config.columns.image
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
    return RawTable(rows=rows, root=root, source_uri=str(folder.resolve()))
