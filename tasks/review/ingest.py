"""Read completed reviews back and check them against the run's queue.

Accepted files: the review sheet's CSV and the queue CSV filled in (``.csv``), the queue JSONL
filled in (``.jsonl``) and Label Studio's JSON export (``.json``). Every reader gives the same
long table, one row per (item, reviewer): ``review_id``, ``run_id`` (may be empty),
``reviewer``, one column per rating field, ``source`` (``file:line`` or the Label Studio task).

Validation (``check_ratings``) refuses, naming the file and line: an id that is not in the
run's queue, a file written for another run, the same reviewer rating an item twice (in one file
or across files), and — already in the readers — a rating outside its scale, a choice not among
the choices or a file without any rating column. Rows without any answer are items not reviewed
yet and are left out. Nothing is stored unless every file passes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import RatingField
from tasks.io import FileRefused, read_regular_file
from tasks.io.refusals import read_problem
from tasks.review.errors import ReviewFileError
from tasks.review.queue import REVIEWER_COLUMN

MAX_REVIEW_FILE_BYTES = 512 * 2**20
KEY_COLUMNS = ("review_id", "run_id", REVIEWER_COLUMN)


def read_ratings(path: Path, schema: list[RatingField], default_reviewer: str | None = None
                 ) -> pd.DataFrame:
    """The ratings of one review file (format by suffix); ``default_reviewer`` names the rater
    of rows that leave ``reviewer`` empty (default: the file's name without suffix)."""
    name = path.name
    data = _read_bytes(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        from tasks.review.label_studio import read_label_studio_export

        frame = read_label_studio_export(path, schema)
    elif suffix in (".csv", ".jsonl"):
        text = _decode(data, name)
        rows = _csv_rows(text, name) if suffix == ".csv" else _jsonl_rows(text, name)
        frame = _frame(rows, schema, name, default_reviewer or path.stem)
    else:
        raise ReviewFileError(f"{name}: unsupported review file type {suffix!r}: use the "
                              "sheet's or the queue's .csv, the queue's .jsonl or Label "
                              "Studio's JSON export (.json)")
    return frame.assign(file=str(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return read_regular_file(path, MAX_REVIEW_FILE_BYTES, "MAX_REVIEW_FILE_BYTES")
    except (OSError, FileRefused) as error:
        raise ReviewFileError(read_problem(error, "review file", str(path))) from None


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ReviewFileError(f"{name}: not UTF-8 text (byte {error.start})") from None


def _csv_rows(text: str, name: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    if not reader.fieldnames or "review_id" not in reader.fieldnames:
        raise ReviewFileError(f"{name}: line 1: no review_id column (columns: "
                              f"{reader.fieldnames or []})")
    while True:
        start = reader.line_num + 1  # a record may span lines: name the line it starts on
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ReviewFileError(f"{name}: line {start}: {error}") from None
        if None in row:
            raise ReviewFileError(f"{name}: line {start}: more cells than the "
                                  f"{len(reader.fieldnames)} header columns")
        yield start, row


def _jsonl_rows(text: str, name: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ReviewFileError(f"{name}: line {number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict) or "review_id" not in row:
            raise ReviewFileError(f"{name}: line {number}: not an object with a review_id")
        yield number, row


def _frame(rows: Iterator[tuple[int, Mapping[str, Any]]], schema: list[RatingField], name: str,
           default_reviewer: str) -> pd.DataFrame:
    records, present = [], None
    for number, row in rows:
        if present is None:
            present = [f for f in schema if f.name in row]
            if not present:
                raise ReviewFileError(f"{name}: line {number}: none of the rating columns "
                                      f"{[f.name for f in schema]}")
        answers = {f.name: parse_answer(f, row.get(f.name), f"{name}: line {number}")
                   for f in present}
        if all(v is None for v in answers.values()):
            continue  # not reviewed yet
        records.append({"review_id": _cell(row.get("review_id")), "run_id": _cell(row.get(
            "run_id")), REVIEWER_COLUMN: _cell(row.get(REVIEWER_COLUMN)) or default_reviewer,
            **answers, "source": f"{name}: line {number}"})
    return _typed(pd.DataFrame(records), schema)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def parse_answer(field: RatingField, value: Any, where: str) -> Any:
    """One answer checked against its field: an int on the scale, one of the choices, or text;
    blank is None."""
    text = _cell(value)
    if not text:
        return None
    if field.type == "text":
        return text
    if field.type == "choice":
        match = {c.lower(): c for c in field.choices}.get(text.lower())
        if match is None:
            raise ReviewFileError(f"{where}: {field.name} {text!r} is not one of "
                                  f"{field.choices}")
        return match
    return _rating(field, text, where)


def _rating(field: RatingField, text: str, where: str) -> int:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise ReviewFileError(f"{where}: {field.name} {text!r} is not a whole number")
    if not field.min <= number <= field.max:
        raise ReviewFileError(f"{where}: {field.name} {int(number)} is outside "
                              f"{field.min}..{field.max}")
    return int(number)


def _typed(frame: pd.DataFrame, schema: list[RatingField]) -> pd.DataFrame:
    columns = [*KEY_COLUMNS, *(f.name for f in schema), "source"]
    frame = frame.reindex(columns=columns)
    for field in schema:
        if field.type == "rating":
            frame[field.name] = pd.to_numeric(frame[field.name]).astype("Int64")
    return frame


def check_ratings(ratings: pd.DataFrame, queue_ids: set[str], run_id: str) -> None:
    """Refuse unknown ids, another run's file and repeated (item, reviewer) pairs."""
    other_run = ratings[(ratings["run_id"].fillna("") != "") & (ratings["run_id"] != run_id)]
    if len(other_run):
        row = other_run.iloc[0]
        raise ReviewFileError(f"{row['source']}: written for run {row['run_id']}, not {run_id}")
    unknown = ratings[~ratings["review_id"].isin(queue_ids)]
    if len(unknown):
        row = unknown.iloc[0]
        raise ReviewFileError(f"{row['source']}: review_id {row['review_id']!r} is not in the "
                              f"run's review queue ({len(unknown)} such rows)")
    repeated = ratings[ratings.duplicated(["review_id", REVIEWER_COLUMN], keep=False)]
    if len(repeated):
        first = repeated.groupby(["review_id", REVIEWER_COLUMN])["source"].apply(list).iloc[0]
        row = repeated.iloc[0]
        raise ReviewFileError(f"{first[-1]}: {row[REVIEWER_COLUMN]} rated {row['review_id']!r} "
                              f"again (also at {first[0]}); one rating per reviewer and item")
