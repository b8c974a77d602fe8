"""The reference (real) images of a text-to-image evaluation, read like a dataset.

``text_to_image.references`` is a folder or a manifest file:

- a **folder**: every file under it (sub-folders included, symlinked folders not followed) whose
  name ends in an image suffix (``IMAGE_SUFFIXES``, any case), in path order; the item id is
  the path relative to the folder;
- a **manifest** (CSV/TSV/JSONL/parquet, read by the manifest source with its rules): one image
  path per row in ``reference_column``, relative to ``reference_root`` (default: the
  manifest's folder); an ``id`` column, when present, gives the item ids.

Either way the rows go through the data sources' ``normalize``: a path that escapes its root,
a missing file, a file that is not a readable image (Pillow's verify, byte and pixel limits) or
a duplicate becomes a reject with its reason, never an error; only a references setting that
names nothing readable, or a set without one usable image, is a ``DataError``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tasks.config import ColumnMapping, DatasetConfig, TextToImageConfig
from tasks.data.base import SOURCES, DataError, Dataset, RawTable, normalize
from tasks.data.digests import DigestCache

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# the reference table's columns (one row per reference row: usable or rejected)
TABLE_COLUMNS = ["item_id", "image", "image_path", "image_sha256", "status", "reason"]


def folder_images(folder: Path) -> list[str]:
    """Image files under ``folder`` as sorted POSIX paths relative to it."""
    found = []
    for directory, subfolders, files in os.walk(folder, followlinks=False):
        subfolders.sort()
        for name in files:
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append((Path(directory) / name).relative_to(folder).as_posix())
    return sorted(found)


def _dataset_config(config: TextToImageConfig, folder: bool) -> DatasetConfig:
    column = "image" if folder else config.reference_column
    return DatasetConfig(path=str(config.references), root=None if folder else
                         config.reference_root, limit=config.reference_limit,
                         columns=ColumnMapping(id="id", image=column, captions=None,
                                               label=None))


def load_references(config: TextToImageConfig, digests: DigestCache | None = None) -> Dataset:
    """The reference images as items (usable images) plus rejects (with reasons); with
    ``digests``, unchanged images already checked are not read again (as the dataset's)."""
    if not config.references:
        raise DataError("text_to_image.references is not set: give a folder or a manifest of "
                        "reference images")
    path = Path(config.references).expanduser()
    if path.is_dir():
        names = folder_images(path)
        if not names:
            raise DataError(f"reference folder {path} holds no image files (looked for "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        raw = RawTable(rows=pd.DataFrame({"id": names, "image": names}), root=path,
                       source_uri=str(path.resolve()))
        dataset_config = _dataset_config(config, folder=True)
    elif path.exists():
        dataset_config = _dataset_config(config, folder=False)
        raw = SOURCES.get("manifest")(dataset_config)
    else:
        raise DataError(f"reference images {path}: no such folder or manifest file")
    if raw.rows.empty:
        raise DataError(f"reference manifest {raw.source_uri} has no rows")
    return normalize(raw, dataset_config, digests)


def reference_table(references: Dataset) -> pd.DataFrame:
    """One row per reference: the usable images (status ``usable``) then the rejected rows
    (status ``rejected``, with the reason)."""
    usable = references.items.reindex(columns=TABLE_COLUMNS[:4]).assign(status="usable",
                                                                          reason="")
    item_rejects = references.rejects[references.rejects["scope"] == "item"]
    rejected = pd.DataFrame({"item_id": item_rejects["item_id"].astype(str),
                             "image": None, "image_path": None, "image_sha256": None,
                             "status": "rejected", "reason": item_rejects["reason"]})
    return pd.concat([usable, rejected], ignore_index=True)[TABLE_COLUMNS]


def usable_or_fail(references: Dataset) -> None:
    """A ``DataError`` naming the first reason when no reference image is usable."""
    if len(references.items):
        return
    rejects = references.rejects[references.rejects["scope"] == "item"]
    first = f" (the first as: {rejects['reason'].iloc[0]})" if len(rejects) else ""
    raise DataError(f"no usable reference images in {references.source_uri}: all "
                    f"{len(rejects)} rejected{first}")
