"""Small array helpers shared by adapters, task kinds and metrics; one place each.

Part of the inference fingerprint's code version: adapters and kinds' infer paths use them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def l2_normalize(vectors: Any, dtype: Any = np.float32) -> np.ndarray:
    """Rows scaled to unit length in ``dtype``; all-zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=dtype)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(vectors.dtype).tiny)


def flatten_cells(cells: Iterable[Sequence[T]]) -> list[T]:
    """A column of list cells (e.g. each item's captions) as one flat list, in order."""
    return [value for cell in cells for value in cell]


def owners(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Row of the owning cell for every flattened value: ``owners([2, 1]) == [0, 0, 1]``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.repeat(np.arange(len(lengths)), lengths)


def scatter_rows(count: int, blocks: Sequence[tuple[Sequence[int], np.ndarray]],
                 dtype: Any = np.float32) -> np.ndarray:
    """A ``(count, width)`` matrix with each block's rows at its row positions and NaN rows
    where nothing was computed (failed inputs). Blocks must agree on the width."""
    widths = {block.shape[1] for _, block in blocks if len(block)}
    if len(widths) > 1:
        raise ValueError(f"outputs differ in width across batches: {sorted(widths)}")
    out = np.full((count, widths.pop() if widths else 0), np.nan, dtype=dtype)
    for rows, block in blocks:
        if len(rows):
            out[list(rows)] = block
    return out
