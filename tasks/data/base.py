"""Shared pieces of the data sources: the registry, path safety, and row normalisation.

A source turns its input into a ``RawTable`` (a DataFrame of raw rows plus the folder image paths
are relative to). ``normalize`` then applies the column mapping and turns every unusable row
into a recorded reject: every raw row in is part of an item or of a reject with a reason.

Row accounting: ``rows_in`` counts raw input rows before any grouping (the source's own rejects,
e.g. malformed JSON lines, included). Each item says how many raw rows it holds
(``source_rows``; one-caption-per-row manifests group several rows into one item) and each
reject how many it stands for (``rows``: 1 for a rejected row, the group's size for a rejected
group, 0 for a note about a kept item such as dropped empty captions), so
``items.source_rows.sum() + rejects[scope == "item"].rows.sum() == rows_in``
(``Dataset.row_counts``).

Grouping rule: rows whose caption cell is a single string (or empty) are grouped by id (or by
image when there is no id column). Rows with the same id are merged only when they name the same
image (compared after path normalisation); a row whose id is already used for another image is
rejected, naming the id and both images. The first row of a group gives the item's label and
metadata. Rows with a list of captions are never merged: a repeated id is rejected as a
duplicate (as a conflicting duplicate, naming both images, when it names another image).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

from tasks.config import DatasetConfig
from tasks.data.cells import (
    CellError,
    caption_values,
    id_value,
    image_value,
    is_missing,
    label_value,
    show,
)
from tasks.data.digests import DigestCache, FileKey, file_key
from tasks.io import (
    MAX_MANIFEST_BYTES,
    FileRefused,
    ImageError,
    error_text,
    open_regular_file,
    read_image_file,
    verify_image,
    write_parquet,
)
from tasks.io.refusals import read_problem
from tasks.registry import Registry

Source = Callable[[DatasetConfig], "RawTable"]
SOURCES: Registry[Source] = Registry("data source", package="tasks.data",
                                     skip=("base", "cells", "digests"))
register_source = SOURCES.register

ITEM_COLUMNS = ["item_id", "image", "image_path", "image_sha256", "captions", "label",
                "source_rows"]
REJECT_COLUMNS = ["row", "item_id", "scope", "reason", "rows"]


class DataError(ValueError):
    """The dataset as a whole cannot be read (missing manifest, bad columns, ...)."""


def open_data_file(path: Path, what: str, name: str | None = None) -> IO[bytes]:
    """Open a manifest or split file (regular files only, ``MAX_MANIFEST_BYTES`` at most);
    every refusal is a ``DataError`` naming ``what`` and the file (``name``, default the path)."""
    name = name or str(path)
    try:
        return open_regular_file(path, MAX_MANIFEST_BYTES, "MAX_MANIFEST_BYTES")
    except (OSError, FileRefused) as error:
        raise DataError(read_problem(error, what, name)) from None


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
    rows_in: int  # raw input rows, before grouping
    protocol: dict[str, Any] | None = None

    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.items.columns if c not in ITEM_COLUMNS]

    def row_counts(self) -> dict[str, int]:
        """Raw rows in, raw rows held by items, raw rows rejected: the last two add up to the
        first."""
        return row_counts(self.items, self.rejects, self.rows_in)


def row_counts(items: pd.DataFrame, rejects: pd.DataFrame, rows_in: int) -> dict[str, int]:
    item_rows = int(items["source_rows"].sum()) if len(items) else 0
    rejected = rejects[rejects["scope"] == "item"] if len(rejects) else rejects
    rejected_rows = int(rejected["rows"].sum()) if len(rejected) else 0
    return {"rows_in": rows_in, "item_rows": item_rows, "rejected_rows": rejected_rows}


def resolve_inside(root: Path, relative: str) -> Path:
    """Resolve ``relative`` under ``root``; refuse anything that ends up outside it (symlinks
    are followed first), a non-string or empty value, a NUL character, or a symlink loop."""
    return _resolve_under(root.resolve(), relative)


def _resolve_under(root: Path, relative: Any) -> Path:
    """``resolve_inside`` for a ``root`` that is already resolved."""
    relative = image_value(relative)
    try:
        candidate = (root / relative).resolve()
    except RuntimeError:  # Python 3.11 reports a symlink loop as RuntimeError
        raise ValueError(f"image path {show(relative)} cannot be resolved: symlink loop") \
            from None
    except OSError as error:
        raise ValueError(f"image path {show(relative)} cannot be resolved: "
                         f"{error_text(error)}") from None
    if not candidate.is_relative_to(root):
        raise ValueError(f"image path {show(relative)} escapes the dataset root")
    return candidate


def check_image(path: Path) -> tuple[str | None, str | None]:
    """Return (sha256, None) for a readable image, or (None, reason).

    The file must be a regular file of at most ``MAX_IMAGE_BYTES`` (a FIFO, socket, device or
    directory is refused before it is read), declare at most ``MAX_IMAGE_PIXELS`` and pass
    Pillow's ``verify``. Never raises: this runs in a thread pool over untrusted files."""
    try:
        data = read_image_file(path)
    except FileNotFoundError:
        return None, "image file not found"
    except FileRefused as error:
        return None, str(error)
    except OSError as error:
        return None, f"image file unreadable: {error_text(error)}"
    try:
        verify_image(data)
    except ImageError as error:
        return None, str(error)
    except Exception as error:  # noqa: BLE001 - a decoder bug must not end the whole load
        return None, f"not a readable image: {type(error).__name__}: {error_text(error)}"
    return hashlib.sha256(data).hexdigest(), None


@dataclass
class _Entry:
    """The raw rows (positions in the table) that become one item, or one reject."""

    positions: list[int]
    item_id: str
    image: str = ""
    problem: str | None = None  # why the entry is rejected, when it is
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # rows naming another image


def _has_value(value: Any) -> bool:
    return not is_missing(value) and not (isinstance(value, str) and not value.strip())


def _group_rows(rows: pd.DataFrame, config: DatasetConfig) -> list[_Entry]:
    """Every raw row assigned to an entry, in order of first appearance (see the module
    docstring for the grouping rule); rows with an unusable image or id value are entries with
    a problem."""
    cols = config.columns
    labels = [_row_label(label) for label in rows.index]
    images = rows[cols.image].tolist()
    ids = rows[cols.id].tolist() if cols.id and cols.id in rows.columns else None
    captions = rows[cols.captions].tolist() if cols.captions else None
    entries: list[_Entry] = []
    groups: dict[tuple[str, str], _Entry] = {}
    for position, label in enumerate(labels):
        try:
            item_id = id_value(ids[position], label) if ids is not None else str(label)
        except CellError as error:
            entries.append(_Entry([position], str(label), problem=str(error)))
            continue
        try:
            image = image_value(images[position])
        except CellError as error:
            entries.append(_Entry([position], item_id, problem=str(error)))
            continue
        cell = captions[position] if captions is not None else None
        groupable = captions is not None and (isinstance(cell, str) or is_missing(cell))
        if ids is not None:
            key = ("id", item_id) if _has_value(ids[position]) else None
        else:
            key = ("image", posixpath.normpath(image))
        entry = groups.get(key) if groupable and key is not None else None
        if entry is None:
            entries.append(_Entry([position], item_id, image))
            if groupable and key is not None:
                groups[key] = entries[-1]
        elif posixpath.normpath(entry.image) == posixpath.normpath(image):
            entry.positions.append(position)
        else:
            first = labels[entry.positions[0]]
            entry.conflicts.append(_reject(label, item_id, "item", _conflict_reason(
                item_id, entry.image, first, image)))
    return entries


def _caption_cell(rows: pd.DataFrame, column: str, positions: list[int]) -> Any:
    """The captions of an entry: its cell, or the list of its rows' cells when grouped."""
    location = rows.columns.get_loc(column)
    if len(positions) == 1:
        return rows.iat[positions[0], location]
    return [rows.iat[position, location] for position in positions]


def _renamed(columns: list[Any], mapped: set[Any]) -> dict[Any, Any]:
    """Unmapped columns named like an item column are kept as ``source_<name>`` (made unique)."""
    taken, renames = set(columns), {}
    for column in columns:
        if column in ITEM_COLUMNS and column not in mapped:
            new = f"source_{column}"
            while new in taken:
                new += "_"
            taken.add(new)
            renames[column] = new
    return renames


def _check_columns(rows: pd.DataFrame, config: DatasetConfig, source_uri: str) -> None:
    cols = config.columns
    if not len(rows.columns):
        raise DataError(f"{source_uri} has no rows")
    for required in filter(None, (cols.image, cols.captions)):
        if required not in rows.columns:
            raise DataError(
                f"column {required!r} not found in {source_uri}; columns are "
                f"{list(rows.columns)} (set dataset.columns to map them)"
            )


def _item_texts(rows: pd.DataFrame, entry: _Entry, config: DatasetConfig,
                record: dict[str, Any]) -> tuple[list[str], int, str | None]:
    """(captions kept, empty captions dropped, label); ``CellError`` for an unusable value."""
    cols = config.columns
    kept: list[str] = []
    dropped = 0
    if cols.captions:
        captions = caption_values(_caption_cell(rows, cols.captions, entry.positions),
                                  config.caption_separator)
        kept = [caption for caption in captions if caption]
        dropped = len(captions) - len(kept)
    label = label_value(record.get(cols.label)) if cols.label else None
    return kept, dropped, label


def normalize(raw: RawTable, config: DatasetConfig, digests: DigestCache | None = None
              ) -> Dataset:
    """Items plus recorded rejects; every raw row is accounted for (see the module docstring).
    With ``digests``, images already checked with unchanged files are not read again
    (``tasks.data.digests``)."""
    cols = config.columns
    rows = raw.rows
    _check_columns(rows, config, raw.source_uri)
    rejects = [_with_rows(reject) for reject in raw.rejects]
    entries = _group_rows(rows, config)
    if config.limit is not None:
        entries = entries[: config.limit]
    rows_in = sum(int(r["rows"]) for r in rejects if r["scope"] == "item") + sum(
        len(entry.positions) + len(entry.conflicts) for entry in entries)
    mapped = {cols.id, cols.image, cols.captions, cols.label}
    renames = _renamed(list(rows.columns), mapped)
    meta_cols = [renames.get(c, c) for c in rows.columns if c not in mapped]
    paths = _resolve_paths(entries, raw.root)
    hashes = dict(zip(paths, _check_images(list(paths.values()), digests), strict=True))
    firsts = rows.iloc[[entry.positions[0] for entry in entries]].to_dict(orient="records")

    items: list[dict[str, Any]] = []
    seen_ids: dict[str, tuple[str, Any]] = {}  # id -> (image, row) of the item holding it
    for number, (entry, record) in enumerate(zip(entries, firsts, strict=True)):
        row = _row_label(rows.index[entry.positions[0]])
        rejects += entry.conflicts
        size = len(entry.positions)
        digest, reason = hashes.get(number, (None, entry.problem))
        if reason is None and entry.item_id in seen_ids:
            reason = _duplicate_reason(entry, *seen_ids[entry.item_id])
        if reason is None:
            try:
                kept, dropped, label = _item_texts(rows, entry, config, record)
            except CellError as error:
                reason = str(error)
            else:
                if cols.captions and not kept:
                    reason = "no caption"
                elif dropped:
                    rejects.append(_reject(row, entry.item_id, "caption",
                                           f"{dropped} empty caption(s) dropped"))
        if reason is not None:
            rejects.append(_reject(row, entry.item_id, "item", reason, rows=size))
            continue
        seen_ids[entry.item_id] = (entry.image, row)
        items.append({
            "item_id": entry.item_id,
            "image": entry.image,
            "image_path": str(paths[number]),
            "captions": kept,
            "label": label,
            "image_sha256": digest,
            "source_rows": size,
            **{renames.get(c, c): _plain(record[c]) for c in rows.columns if c not in mapped},
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


def _duplicate_reason(entry: _Entry, image: str, row: Any) -> str:
    """An id already held by an item: a plain duplicate, or one naming another image."""
    if posixpath.normpath(image) == posixpath.normpath(entry.image):
        return "duplicate item id"
    return _conflict_reason(entry.item_id, image, row, entry.image)


def _conflict_reason(item_id: str, first_image: str, first_row: Any, image: str) -> str:
    return (f"conflicting duplicate id: id {show(item_id)} is already used for image "
            f"{show(first_image)} (row {first_row}); this row names another image, "
            f"{show(image)}")


def _resolve_paths(entries: list[_Entry], root: Path) -> dict[int, Path]:
    """Entry number -> resolved image path; an entry whose path is refused gets its problem."""
    paths, resolved_root = {}, root.resolve()
    for number, entry in enumerate(entries):
        if entry.problem is not None:
            continue
        try:
            paths[number] = _resolve_under(resolved_root, entry.image)
        except ValueError as error:
            entry.problem = str(error)
    return paths


CHECK_WORKERS = max(4, min(16, os.cpu_count() or 1))  # Pillow and hashlib release the GIL


def _check_images(paths: list[Path], digests: DigestCache | None = None
                  ) -> list[tuple[str | None, str | None]]:
    """``check_image`` of every path, in a thread pool; with ``digests``, a file whose cache
    entry matches its ``stat`` exactly is not read (its cached sha256 is used), and every
    newly checked file that did not change while it was read is stored."""
    keys: list[FileKey | None] = [file_key(path) for path in paths] if digests else []
    known = digests.lookup(keys) if digests else {}
    misses = [n for n in range(len(paths)) if n not in known]
    with ThreadPoolExecutor(max_workers=CHECK_WORKERS) as pool:
        checked = dict(zip(misses, pool.map(check_image, [paths[n] for n in misses]),
                           strict=True))
    if digests:
        digests.store((key, sha) for n, (sha, _) in checked.items()
                      if sha is not None and (key := keys[n]) is not None
                      and file_key(paths[n]) == key)
    return [(known[n], None) if n in known else checked[n] for n in range(len(paths))]


def _row_label(label: Any) -> Any:
    try:
        return int(label) if float(label).is_integer() else label
    except (TypeError, ValueError):
        return label


def _item_id(record: pd.Series, id_col: str | None, row_number: Any) -> str:
    """The item id of a raw row (the row number when there is no id); see ``cells.id_value``."""
    if id_col and id_col in record.index:
        try:
            return id_value(record[id_col], row_number)
        except CellError:
            return str(row_number)
    return str(row_number)


def _reject(row: Any, item_id: str, scope: str, reason: str, rows: int | None = None
            ) -> dict[str, Any]:
    """A reject row; ``rows`` is how many raw rows it stands for (default: 1 for an item-level
    reject, 0 for a note about a kept item)."""
    return {"row": _row_label(row), "item_id": item_id, "scope": scope, "reason": reason,
            "rows": (1 if scope == "item" else 0) if rows is None else rows}


def _with_rows(reject: dict[str, Any]) -> dict[str, Any]:
    """A source's reject with its ``rows`` count filled in."""
    if "rows" in reject:
        return reject
    return {**reject, "rows": 1 if reject.get("scope") == "item" else 0}


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


def dataset_digest(items: pd.DataFrame) -> str:
    """Digest of what is evaluated: ids, captions, labels, metadata and image bytes (sha256);
    not where the files lie, nor how the manifest laid out the rows (``source_rows``)."""
    digest = hashlib.sha256()
    records = items.drop(columns=["image_path", "source_rows"]).to_dict(orient="records")
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
    rows_in: int  # raw input rows
    items: int
    rejected: int  # item-level reject records
    protocol: dict[str, Any] | None = None
    item_rows: int = 0  # raw rows held by the items
    rejected_rows: int = 0  # raw rows rejected: item_rows + rejected_rows == rows_in

    def load_items(self) -> pd.DataFrame:
        return pd.read_parquet(self.items_path)

    def load_rejects(self) -> pd.DataFrame:
        return pd.read_parquet(self.rejects_path)


def save_dataset(dataset: Dataset, folder: Path) -> DatasetRef:
    folder.mkdir(parents=True, exist_ok=True)
    items_path, rejects_path = folder / "items.parquet", folder / "rejects.parquet"
    write_parquet(dataset.items, items_path)
    write_parquet(dataset.rejects.astype({"row": str}), rejects_path)
    counts = dataset.row_counts()
    return DatasetRef(
        items_path=str(items_path), rejects_path=str(rejects_path), digest=dataset.digest,
        source_uri=dataset.source_uri, rows_in=dataset.rows_in,
        items=len(dataset.items),
        rejected=int((dataset.rejects["scope"] == "item").sum()) if len(dataset.rejects) else 0,
        protocol=dataset.protocol,
        item_rows=counts["item_rows"], rejected_rows=counts["rejected_rows"],
    )
