"""Manifest source: a CSV, JSONL/JSON-lines or parquet file listing image paths and captions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tasks.config import DatasetConfig
from tasks.data.base import DataError, RawTable, register_source

READERS = {
    ".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
    ".tsv": lambda p: pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False),
    ".parquet": pd.read_parquet,
}


def read_jsonl(path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Read JSON lines; a malformed line becomes a reject instead of failing the whole file."""
    records, rejects = [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as error:
                rejects.append({"row": number, "item_id": str(number), "scope": "item",
                                "reason": f"malformed JSON line: {error}"})
                continue
            records.append((number, record))
    frame = pd.DataFrame([r for _, r in records], index=[n for n, _ in records])
    return frame, rejects


def read_manifest(path: Path, name: str | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Read a local manifest file into (rows, rejects); ``name`` is how errors refer to it."""
    name = name or str(path)
    suffix = Path(name).suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson", ".json"):
            return read_jsonl(path)
        if suffix in READERS:
            return READERS[suffix](path), []
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read manifest {name}: {error}") from None
    raise DataError(f"unsupported manifest type {suffix!r}: use CSV, TSV, JSONL or parquet")


def select_split(rows: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """Keep the rows of ``split`` when the manifest has a 'split' column."""
    if split is not None and "split" in rows.columns:
        return rows[rows["split"] == split]
    return rows


@register_source("manifest")
def load_manifest(config: DatasetConfig) -> RawTable:
    path = Path(config.path).expanduser()
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    rows, rejects = read_manifest(path)
    root = Path(config.root).expanduser() if config.root else path.parent
    return RawTable(rows=select_split(rows, config.split), root=root,
                    source_uri=str(path.resolve()), rejects=rejects)
