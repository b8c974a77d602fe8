"""What a manifest cell may hold: the rules for image, id, caption and label values.

Each function returns the usable value, or raises ``CellError`` whose message is the reject
reason (deterministic: it names the value's kind, never a memory address).

- **image**: a non-empty string without NUL characters. A missing value (null, NaN, absent key)
  or any other type (number, list, object, boolean) is rejected, so a stray file named ``nan``
  or ``None`` is never scored for it.
- **id**: a string or a number (an integral float such as ``1.0`` -> ``"1"``); a missing or
  blank id falls back to the row number; a list, object or boolean is rejected.
- **captions**: a string (split on ``caption_separator`` when one is set), or a flat list of
  strings. Numbers are accepted and written as decimal text (``2`` -> ``"2"``, ``2.5`` ->
  ``"2.5"``), because numeric answers are common in VQA data; a NaN / null element is an empty
  caption. Booleans, objects (dicts), bytes, nested lists and non-finite numbers are rejected.
- **label**: a string, a number or a boolean (as text), or missing; a list or object is
  rejected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np


class CellError(ValueError):
    """A cell value that cannot be used; the message is the reject reason."""


def is_missing(value: Any) -> bool:
    """None, NaN, pandas' NA / NaT."""
    if value is None:
        return True
    if isinstance(value, (str, bytes, list, tuple, dict, np.ndarray)):
        return False
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def kind_of(value: Any) -> str:
    """A short, deterministic name for a value's type as a manifest author would say it."""
    if is_missing(value):
        return "missing"
    if isinstance(value, (bool, np.bool_)):
        return "a boolean"
    if isinstance(value, numbers.Number):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, Mapping):
        return "an object (dict)"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "a list"
    return f"a {type(value).__name__}"


def show(text: str, limit: int = 120) -> str:
    """``repr`` of a user string, shortened to ``limit`` characters for reasons."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def image_value(value: Any) -> str:
    if is_missing(value):
        raise CellError("image value is missing")
    if not isinstance(value, str):
        raise CellError(f"image value is {kind_of(value)}, not a path string")
    if not value.strip():
        raise CellError("empty image path")
    if "\x00" in value:
        raise CellError(f"image path {show(value)} contains a NUL character")
    return str(value)


def _number_text(value: Any) -> str | None:
    """Decimal text of a number, None for NaN; booleans and infinities are refused."""
    if isinstance(value, (bool, np.bool_)):
        raise CellError("a boolean")
    number = value.item() if isinstance(value, np.generic) else value
    if isinstance(number, float):
        if math.isnan(number):
            return None
        if math.isinf(number):
            raise CellError("an infinite number")
        if number.is_integer() and abs(number) < 2**53:
            return str(int(number))
    return str(number)


def id_value(value: Any, row: Any) -> str:
    """The item id of a row: the id cell as text, or the row number when it is missing/blank."""
    if is_missing(value) or (isinstance(value, str) and not value.strip()):
        return str(row)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Number) and not isinstance(value, (bool, np.bool_)):
        try:
            text = _number_text(value)
        except CellError as error:
            raise CellError(f"id value is {error}, not a string or number") from None
        return str(row) if text is None else text
    raise CellError(f"id value is {kind_of(value)}, not a string or number")


def _caption_parts(value: Any, separator: str | None, where: str) -> list[str]:
    if is_missing(value):
        return [""]
    if isinstance(value, str):
        parts = value.split(separator) if separator else [value]
        return [" ".join(part.split()) for part in parts]
    if isinstance(value, numbers.Number):
        try:
            text = _number_text(value)
        except CellError as error:
            raise CellError(f"{where} is {error}, not text") from None
        return [text or ""]
    raise CellError(f"{where} is {kind_of(value)}, not text")


def caption_values(value: Any, separator: str | None = None) -> list[str]:
    """Every caption of a cell, whitespace-normalised; empty strings stand for empty captions
    (the caller drops and counts them). ``CellError`` for a value that is not text."""
    if is_missing(value):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        if isinstance(value, np.ndarray) and value.ndim != 1:
            raise CellError("captions value is a nested list, not a flat list of strings")
        captions: list[str] = []
        for position, element in enumerate(list(value), start=1):
            if isinstance(element, (list, tuple, np.ndarray)):
                raise CellError("captions value is a nested list, not a flat list of strings")
            captions += _caption_parts(element, separator, f"caption {position}")
        return captions
    if isinstance(value, Mapping):
        raise CellError("captions value is an object (dict), not a string or a list of strings")
    return _caption_parts(value, separator, "captions value")


def label_value(value: Any) -> str | None:
    if is_missing(value):
        return None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Number):
        try:
            return _number_text(value)
        except CellError as error:
            raise CellError(f"label is {error}, not a string or number") from None
    raise CellError(f"label is {kind_of(value)}, not a string or number")
