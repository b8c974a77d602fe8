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


@register_source("manifest")
def load_manifest(config: DatasetConfig) -> RawTable:
    path = Path(config.path).expanduser()
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    rejects: list[dict] = []
    try:
        if suffix in (".jsonl", ".ndjson", ".json"):
            rows, rejects = read_jsonl(path)
        elif suffix in READERS:
            rows = READERS[suffix](path)
        else:
            raise DataError(f"unsupported manifest type {suffix!r}: use CSV, TSV, JSONL or parquet")
    except (OSError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"cannot read manifest {path}: {error}") from None
    if config.split is not None and "split" in rows.columns:
        rows = rows[rows["split"] == config.split]
    root = Path(config.root).expanduser() if config.root else path.parent
    return RawTable(rows=rows, root=root, source_uri=str(path.resolve()), rejects=rejects)
