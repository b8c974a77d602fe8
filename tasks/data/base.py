"""Shared pieces of the data sources: the registry, path safety, and row normalisation.

A source turns its input into a ``RawTable`` (a DataFrame of raw rows plus the folder image paths
are relative to). ``normalize`` then applies the column mapping and turns every unusable row
into a recorded reject: every row in is an item or a reject with a reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import DatasetConfig
from tasks.io import write_parquet
from tasks.registry import Registry

Source = Callable[[DatasetConfig], "RawTable"]
SOURCES: Registry[Source] = Registry("data source", package="tasks.data", skip=("base",))
register_source = SOURCES.register

ITEM_COLUMNS = ["item_id", "image", "image_path", "image_sha256", "captions", "label"]
REJECT_COLUMNS = ["row", "item_id", "scope", "reason"]


class DataError(ValueError):
    """The dataset as a whole cannot be read (missing manifest, bad columns, ...)."""


@dataclass
class RawTable:
    rows: pd.DataFrame
    root: Path
    source_uri: str
    rejects: list[dict[str, Any]] = field(default_factory=list)
    protocol: dict[str, Any] | None = None  # standard split sizes: {"name", "images", "texts"}


@dataclass
class Dataset:
    items: pd.DataFrame  # ITEM_COLUMNS + metadata columns
    rejects: pd.DataFrame  # REJECT_COLUMNS
    root: Path
    source_uri: str
    digest: str
    rows_in: int
    protocol: dict[str, Any] | None = None

    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.items.columns if c not in ITEM_COLUMNS]


def resolve_inside(root: Path, relative: str) -> Path:
    """Resolve ``relative`` under ``root``; refuse anything that ends up outside it."""
    if not relative or not str(relative).strip():
        raise ValueError("empty image path")
    root = root.resolve()
    candidate = (root / str(relative)).resolve()
    if not candidate.is_relative_to(root):
        raise ValueError(f"image path {relative!r} escapes the dataset root")
    return candidate


def check_image(path: Path) -> tuple[str | None, str | None]:
    """Return (sha256, None) for a readable image, or (None, reason)."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "image file not found"
    except OSError as error:
        return None, f"image file unreadable: {error.strerror or error}"
    try:
        import io

        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return None, f"not a readable image: {error}"
    return hashlib.sha256(data).hexdigest(), None


def _captions(value: Any, separator: str | None) -> list[str]:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    if isinstance(value, str):
        parts = value.split(separator) if separator else [value]
    elif hasattr(value, "__iter__"):
        parts = [str(v) for v in value if v is not None]
    else:
        parts = [str(value)]
    return [" ".join(p.split()) for p in parts]


def _group_caption_rows(rows: pd.DataFrame, key: str, caption_col: str) -> pd.DataFrame:
    """One row per caption (common in CSVs) -> one row per item with a caption list; rows are
    grouped by the id column when there is one, else by the image."""
    if rows.empty or not rows[caption_col].map(lambda v: isinstance(v, str)).all():
        return rows
    if not rows[key].duplicated().any():
        return rows
    first = rows.drop_duplicates(key, keep="first").set_index(key)
    first[caption_col] = rows.groupby(key, sort=False)[caption_col].agg(list)
    return first.reset_index()[rows.columns]


def normalize(raw: RawTable, config: DatasetConfig) -> Dataset:
    cols = config.columns
    rows = raw.rows
    for required in filter(None, (cols.image, cols.captions)):
        if required not in rows.columns:
            raise DataError(
                f"column {required!r} not found in {raw.source_uri}; columns are "
                f"{list(rows.columns)} (set dataset.columns to map them)"
            )
    if cols.captions:
        key = cols.id if cols.id and cols.id in rows.columns else cols.image
        rows = _group_caption_rows(rows, key, cols.captions)
    if config.limit is not None:
        rows = rows.iloc[: config.limit]
    rows_in = len(rows) + len(raw.rejects)  # after grouping caption rows into items
    rejects = list(raw.rejects)
    mapped = {cols.id, cols.image, cols.captions, cols.label}
    # unmapped columns that share a name with an item column are kept under "source_<name>"
    rows = rows.rename(columns={c: f"source_{c}" for c in rows.columns
                                if c in ITEM_COLUMNS and c not in mapped})
    meta_cols = [c for c in rows.columns if c not in mapped]
    paths, candidates = _resolve_paths(rows, raw.root, cols.image, rejects, cols.id)
    hashes = _check_images([p for _, p in candidates])
    hash_by_row = {row: result for (row, _), result in zip(candidates, hashes, strict=True)}

    items, seen_ids = [], set()
    for position, (row_number, record) in enumerate(rows.iterrows()):
        item_id = _item_id(record, cols.id, row_number)
        if position not in hash_by_row:
            continue  # path rejected above
        digest, reason = hash_by_row[position]
        if reason:
            rejects.append(_reject(row_number, item_id, "item", reason))
            continue
        if item_id in seen_ids:
            rejects.append(_reject(row_number, item_id, "item", "duplicate item id"))
            continue
        kept: list[str] = []
        if cols.captions:
            captions = _captions(record[cols.captions], config.caption_separator)
            kept = [c for c in captions if c]
            if len(kept) < len(captions):
                rejects.append(_reject(row_number, item_id, "caption",
                                       f"{len(captions) - len(kept)} empty caption(s) dropped"))
            if not kept:
                rejects.append(_reject(row_number, item_id, "item", "no caption"))
                continue
        seen_ids.add(item_id)
        label = record.get(cols.label) if cols.label else None
        items.append({
            "item_id": item_id,
            "image": str(record[cols.image]),
            "image_path": str(paths[position]),
            "captions": kept,
            "label": None if label is None or (isinstance(label, float) and pd.isna(label))
            else str(label),
            "image_sha256": digest,
            **{c: _plain(record[c]) for c in meta_cols},
        })
    frame = pd.DataFrame(items, columns=ITEM_COLUMNS + meta_cols)
    return Dataset(
        items=frame,
        rejects=pd.DataFrame(rejects, columns=REJECT_COLUMNS),
        root=raw.root,
        source_uri=raw.source_uri,
        digest=dataset_digest(frame),
        rows_in=rows_in,
        protocol=raw.protocol,
    )


def _resolve_paths(rows, root, image_col, rejects, id_col):
    paths, candidates = {}, []
    for position, (row_number, record) in enumerate(rows.iterrows()):
        try:
            path = resolve_inside(root, record[image_col])
        except (ValueError, TypeError) as error:
            rejects.append(_reject(row_number, _item_id(record, id_col, row_number), "item",
                                   str(error)))
            continue
        paths[position] = path
        candidates.append((position, path))
    return paths, candidates


def _check_images(paths: list[Path]) -> list[tuple[str | None, str | None]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(check_image, paths))


def _item_id(record: pd.Series, id_col: str | None, row_number: Any) -> str:
    if id_col and id_col in record.index and not pd.isna(record[id_col]):
        return str(record[id_col])
    return str(row_number)


def _reject(row: Any, item_id: str, scope: str, reason: str) -> dict[str, Any]:
    return {"row": int(row) if isinstance(row, int) else row, "item_id": item_id, "scope": scope,
            "reason": reason}


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


def dataset_digest(items: pd.DataFrame) -> str:
    """Digest of what is evaluated: ids, captions, labels, metadata and image bytes (sha256)."""
    digest = hashlib.sha256()
    records = items.drop(columns=["image_path"]).to_dict(orient="records")
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    return digest.hexdigest()



@dataclass(frozen=True)
class DatasetRef:
    """What the data stage hands on: files under the run folder plus summary facts."""

    items_path: str
    rejects_path: str
    digest: str
    source_uri: str
    rows_in: int
    items: int
    rejected: int
    protocol: dict[str, Any] | None = None

    def load_items(self) -> pd.DataFrame:
        return pd.read_parquet(self.items_path)

    def load_rejects(self) -> pd.DataFrame:
        return pd.read_parquet(self.rejects_path)


def save_dataset(dataset: Dataset, folder: Path) -> DatasetRef:
    folder.mkdir(parents=True, exist_ok=True)
    items_path, rejects_path = folder / "items.parquet", folder / "rejects.parquet"
    write_parquet(dataset.items, items_path)
    write_parquet(dataset.rejects.astype({"row": str}), rejects_path)
    return DatasetRef(
        items_path=str(items_path), rejects_path=str(rejects_path), digest=dataset.digest,
        source_uri=dataset.source_uri, rows_in=dataset.rows_in,
        items=len(dataset.items),
        rejected=int((dataset.rejects["scope"] == "item").sum()) if len(dataset.rejects) else 0,
        protocol=dataset.protocol,
    )
