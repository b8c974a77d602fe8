"""Read id -> value files for the ``bifocal score ...`` commands: JSON, JSONL or CSV.

Accepted shapes (``value_keys`` name the field holding the value, e.g. caption/captions):
- JSON object ``{id: value}``;
- JSON list of records ``[{"id"|"image_id"|"question_id": ..., "<value key>": ...}]``
  (the COCO results format), or a COCO annotations file ``{"annotations": [...]}``;
- JSONL with one record per line;
- CSV with an id column and a value column.
Records that repeat an id are gathered into a list when ``many`` is set (several references).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ID_KEYS = ("id", "image_id", "question_id", "item_id")


class InputFileError(ValueError):
    """A predictions/references file that cannot be read; the message says which and why."""


def _id_of(record: dict[str, Any], path: Path) -> str:
    for key in ID_KEYS:
        if key in record:
            return str(record[key])
    raise InputFileError(f"{path}: record without an id field ({', '.join(ID_KEYS)}): {record}")


def _value_of(record: dict[str, Any], value_keys: Sequence[str], path: Path) -> Any:
    for key in value_keys:
        if key in record:
            return record[key]
    raise InputFileError(f"{path}: record without a value field ({', '.join(value_keys)})")


def _records(path: Path) -> list[dict[str, Any]] | dict[str, Any]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        text = path.read_text(encoding="utf-8")
        if suffix in (".jsonl", ".ndjson"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except FileNotFoundError:
        raise InputFileError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(f"cannot read {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise InputFileError(f"{path} is not valid JSON: {error}") from None


def read_mapping(path: str | Path, value_keys: Sequence[str], many: bool = False,
                 keep_records: bool = False) -> dict[str, Any]:
    """id -> value (or id -> list of values with ``many``; id -> the whole record with
    ``keep_records``, for records that carry several fields such as VQA answer types)."""
    path = Path(path)
    data = _records(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if isinstance(data, dict):
        return {str(k): (list(v) if many and isinstance(v, list) else [v] if many else v)
                for k, v in data.items()}
    if not isinstance(data, list):
        raise InputFileError(f"{path}: expected an object or a list of records")
    out: dict[str, Any] = {}
    for record in data:
        if not isinstance(record, dict):
            raise InputFileError(f"{path}: expected records (objects), got {record!r}")
        key, value = _id_of(record, path), _value_of(record, value_keys, path)
        if keep_records:
            value = record
        if many:
            values = value if isinstance(value, list) else [value]
            out.setdefault(key, []).extend(values)
        elif key in out:
            raise InputFileError(f"{path}: id {key!r} appears more than once")
        else:
            out[key] = value
    return out


def align(predictions: dict[str, Any], truth: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Ids present in both (in the truth file's order) and a reason for every other id."""
    both = [k for k in truth if k in predictions]
    skipped = {k: "no prediction" for k in truth if k not in predictions}
    skipped |= {k: "no reference/answer for this id" for k in predictions if k not in truth}
    return both, skipped
