"""Manifest source: a CSV/TSV, JSONL (JSON lines) or parquet file listing image paths and captions.

Reading rules (a row-level problem becomes a reject naming its line; a file-level one a
``DataError`` naming the file and the problem in one sentence):

- The file must be a regular file of at most ``MAX_MANIFEST_BYTES`` (``tasks.io``); a FIFO,
  socket or directory is refused before it is read.
- JSONL is read line by line: a line that is not valid UTF-8, not valid JSON or not a JSON object
  becomes a reject; the other lines are read. A file that is one JSON array is refused.
- CSV/TSV are UTF-8 (a byte-order mark is skipped), comma- / tab-separated with ``"`` quoting,
  every cell read as text. A row whose field count differs from the header's, or that holds bytes
  that are not UTF-8, becomes a reject; a quote that is never closed, a header that looks
  separated by another delimiter, or a duplicated column name refuse the file.
- Row numbers (``row`` in the rejects) count data rows from 0 (JSONL: lines from 0); reasons name
  1-based line numbers as an editor shows them.
- An empty file, a file without data rows and a binary file (a spreadsheet, a ZIP or gzip
  archive, parquet under another suffix, an image) are refused with what they look like.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from tasks.config import DatasetConfig
from tasks.data.base import DataError, RawTable, open_data_file, register_source
from tasks.io import error_text

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SEPARATORS = {".csv": ",", ".tsv": "\t"}
SUFFIXES = (*JSONL_SUFFIXES, *CSV_SEPARATORS, ".parquet")
# reject reasons start with these heads (the report groups reasons on the text before ":")
JSONL_BAD, CSV_BAD = "malformed JSON line", "malformed CSV line"
# magic bytes of files that are sometimes given where a manifest is expected
BINARY_KINDS = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx spreadsheet is one): export it as CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (e.g. an Excel .xls spreadsheet): export it "
                          "as CSV"),
    (b"PAR1", "a parquet file: give it the .parquet suffix"),
    (b"\x1f\x8b", "gzip-compressed: decompress it first"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)


def _line_reject(row: int, reason: str) -> dict[str, Any]:
    return {"row": row, "item_id": str(row), "scope": "item", "reason": reason, "rows": 1}


def sniff_binary(head: bytes, suffix: str) -> str | None:
    """What a file that cannot be a text manifest of ``suffix`` looks like, else None."""
    if suffix == ".parquet":
        return None if head.startswith(b"PAR1") else "not a parquet file (no PAR1 magic bytes)"
    return next((kind for magic, kind in BINARY_KINDS if head.startswith(magic)), None)


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _decoded_lines(handle: IO[bytes]) -> Iterator[tuple[int, str | None, bytes]]:
    """(line number from 0, text or None when not UTF-8, raw bytes); the first line's
    byte-order mark is dropped."""
    for number, raw in enumerate(handle):
        if number == 0:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield number, raw.decode("utf-8"), raw
        except UnicodeDecodeError:
            yield number, None, raw


def _utf8_problem(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"byte 0x{raw[error.start]:02x} at column {error.start + 1}"
    return "undecodable bytes"


def _refuse_json_array(handle: IO[bytes], name: str) -> None:
    """A whole file that is one JSON array (``[{...}, ...]``) is not JSON lines."""
    start = handle.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    handle.seek(0)
    if not start.startswith(b"["):
        return
    try:
        whole = json.loads(handle.read().decode("utf-8-sig"))
    except ValueError:  # e.g. one array per line: read line by line
        whole = None
    handle.seek(0)
    if isinstance(whole, list):
        raise DataError(f"manifest {name} is one JSON array, not JSON lines: write one JSON "
                        "object per line")


def read_jsonl(handle: IO[bytes], name: str) -> tuple[pd.DataFrame, list[dict]]:
    """Read JSON lines; a line that is not UTF-8, not JSON or not an object becomes a reject
    naming its line number, and the other lines are read."""
    _refuse_json_array(handle, name)
    records, index, rejects = [], [], []
    for number, text, raw in _decoded_lines(handle):
        if not raw.strip():
            continue
        line = f"line {number + 1}"
        if text is None:
            rejects.append(_line_reject(number, f"{JSONL_BAD}: not valid UTF-8 at {line} "
                                                f"({_utf8_problem(raw)})"))
            continue
        try:
            record = json.loads(text)
        except ValueError as error:
            message = getattr(error, "msg", None) or error_text(error)
            column = getattr(error, "colno", None)
            where = f"{line}, column {column}" if column else line
            rejects.append(_line_reject(number, f"{JSONL_BAD}: not valid JSON at {where} "
                                                f"({message})"))
            continue
        if not isinstance(record, dict):
            rejects.append(_line_reject(number, f"{JSONL_BAD}: a JSON {_json_kind(record)} "
                                                f"at {line}, not a JSON object"))
            continue
        records.append(record)
        index.append(number)
    if not records:
        first = f" (first problem: {rejects[0]['reason']})" if rejects else ""
        raise DataError(f"manifest {name} has no JSON object lines{first}")
    return pd.DataFrame(records, index=index), rejects


def _check_header(header: list[str], name: str, separator: str) -> list[str]:
    if len(header) == 1:
        other = next((s for s in (";", "\t", "|", ",") if s != separator and s in header[0]),
                     None)
        if other is not None:
            raise DataError(
                f"manifest {name} has a single column {header[0][:80]!r}: its header looks "
                f"separated by {other!r}, but this file type is separated by {separator!r}")
    names = [column.strip() or f"unnamed_{position}" for position, column in enumerate(header)]
    duplicated = sorted({column for column in names if names.count(column) > 1})
    if duplicated:
        raise DataError(f"manifest {name} has the column name {duplicated[0]!r} more than once")
    return names


def read_csv(handle: IO[bytes], name: str, separator: str) -> tuple[pd.DataFrame, list[dict]]:
    """Read CSV/TSV as text cells; a ragged or non-UTF-8 row becomes a reject naming its line."""
    bad_lines: set[int] = set()

    def lines() -> Iterator[str]:
        for number, text, raw in _decoded_lines(handle):
            if text is None:
                bad_lines.add(number + 1)
                text = raw.decode("utf-8", errors="replace")
            yield text

    reader = csv.reader(lines(), delimiter=separator, strict=True)
    header: list[str] | None = None
    cells: list[list[str]] = []
    index: list[int] = []
    rejects: list[dict] = []
    while True:
        first_line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            if "unexpected end of data" in str(error):
                raise DataError(f"manifest {name} has a quoted field that is never closed (the "
                                f"quote opens on line {first_line})") from None
            if header is not None:
                rejects.append(_line_reject(len(index) + len(rejects),
                                            f"{CSV_BAD}: {error} at line {first_line}"))
            continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line is no row (a line of separators is one)
        if header is None:
            header = _check_header(fields, name, separator)
            continue
        row = len(index) + len(rejects)
        spanned = set(range(first_line, reader.line_num + 1))
        if spanned & bad_lines:
            line = min(spanned & bad_lines)
            rejects.append(_line_reject(row, f"{CSV_BAD}: not valid UTF-8 at line {line}"))
        elif len(fields) != len(header):
            rejects.append(_line_reject(row, f"{CSV_BAD}: {len(fields)} fields at line "
                                             f"{first_line}, the header has {len(header)}"))
        else:
            cells.append(fields)
            index.append(row)
    if header is None:
        raise DataError(f"manifest {name} is blank: no header row")
    if not cells and not rejects:
        raise DataError(f"manifest {name} has a header but no data rows")
    return pd.DataFrame(cells, index=index, columns=header, dtype=object), rejects


def read_parquet(handle: IO[bytes], name: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # From bytes in memory, not the Python file object: pyarrow's reader threads calling back
    # into Python could abort the interpreter at exit ("terminate called without an active
    # exception"). The opener has already capped the manifest's size.
    try:
        frame = pq.read_table(pa.BufferReader(handle.read())).to_pandas()
    except (OSError, ValueError, pa.ArrowException) as error:
        raise DataError(f"manifest {name} is not a readable parquet file (truncated or "
                        f"corrupt): {error_text(error)}") from None
    if frame.empty:
        raise DataError(f"manifest {name} has no rows")
    return frame


def read_manifest(path: Path, name: str | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Read a local manifest file into (rows, rejects); ``name`` is how errors refer to it."""
    name = name or str(path)
    with open_data_file(path, "manifest", name) as handle:
        return _read_open(handle, name, Path(name).suffix.lower())


def _read_open(handle: IO[bytes], name: str, suffix: str) -> tuple[pd.DataFrame, list[dict]]:
    if suffix not in SUFFIXES:
        raise DataError(f"unsupported manifest type {suffix!r} ({name}): use CSV, TSV, JSONL or "
                        "parquet")
    head = handle.read(8)
    handle.seek(0)
    if not head:
        raise DataError(f"manifest {name} is empty (0 bytes)")
    kind = sniff_binary(head, suffix)
    if kind is not None:
        raise DataError(f"manifest {name} is {kind}")
    try:
        if suffix in JSONL_SUFFIXES:
            return read_jsonl(handle, name)
        if suffix in CSV_SEPARATORS:
            return read_csv(handle, name, CSV_SEPARATORS[suffix])
        return read_parquet(handle, name), []
    except OSError as error:
        raise DataError(f"cannot read manifest {name}: {error_text(error)}") from None


def select_split(rows: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """Keep the rows of ``split`` when the manifest has a 'split' column."""
    if split is not None and "split" in rows.columns:
        return rows[rows["split"] == split]
    return rows


@register_source("manifest")
def load_manifest(config: DatasetConfig) -> RawTable:
    path = Path(config.path).expanduser()
    rows, rejects = read_manifest(path)
    root = Path(config.root).expanduser() if config.root else path.parent
    return RawTable(rows=select_split(rows, config.split), root=root,
                    source_uri=str(path.resolve()), rejects=rejects)
