"""Parquet writing that never fails on mixed-type metadata."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Parquet, with mixed-type metadata columns (or integers beyond 64 bits) stored as text
    rather than failing."""
    import pyarrow as pa

    try:
        frame.to_parquet(path, index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        fixed = frame.copy()
        for column in fixed.columns:
            if fixed[column].dtype == object and column != "captions":
                fixed[column] = fixed[column].map(lambda v: None if v is None else str(v))
        fixed.to_parquet(path, index=False)
