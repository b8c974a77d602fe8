"""Shared resampling machinery: seeded index and swap streams, counts, p-value convention.

Every stream comes from ``numpy.random.default_rng(seed)`` and is drawn in chunks whose size
depends only on the number of items, so the same seed gives the same resamples whatever else
runs. Bootstrap indices are ``rng.integers(0, n, (rows, n))`` per chunk of ``chunk_rows(n)``
rows: the stream of ``scipy.stats.bootstrap(..., batch=chunk_rows(n), rng=default_rng(seed))``.
Memory stays near ``CHUNK_ELEMENTS`` numbers per chunk, whatever the number of resamples.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse

CHUNK_ELEMENTS = 1 << 20  # indices (8 MiB of int64) per chunk
GATHER_COLUMNS = 16  # up to this many dense columns, resampled sums gather column by column

# (rows, n) resampled item indices -> (rows,) statistic values
IndexStatistic = Callable[[np.ndarray], np.ndarray]
# (rows, k) column sums of per-item sufficient statistics -> (rows,) metric values
SumsStatistic = Callable[[np.ndarray], np.ndarray]
# per-item sufficient statistics, one row per item
Stats: TypeAlias = "np.ndarray | sparse.sparray | sparse.spmatrix"


def chunk_rows(n: int) -> int:
    """Resamples per chunk for ``n`` items: about ``CHUNK_ELEMENTS`` indices, at least one."""
    return max(1, CHUNK_ELEMENTS // max(n, 1))


def index_chunks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap item indices, ``(rows, n)`` int64 at a time, ``resamples`` rows in all."""
    rng = np.random.default_rng(seed)
    rows = chunk_rows(n)
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, (min(rows, resamples - start), n))


def resample(n: int, statistic: IndexStatistic, resamples: int, seed: int) -> np.ndarray:
    """The bootstrap distribution: ``statistic`` of every resample, in stream order."""
    values = [np.asarray(statistic(indices), dtype=np.float64)
              for indices in index_chunks(n, resamples, seed)]
    return np.concatenate(values) if values else np.empty(0)


def counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items occurs in each row of ``indices``: ``(rows, n)`` float64."""
    rows = len(indices)
    flat = (indices + (np.arange(rows) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def resampled_sums(stats: Stats) -> Callable[[np.ndarray], np.ndarray]:
    """``fn(indices (b, n)) -> (b, k)``: the column sums of every resample's rows. The same as
    ``counts(indices) @ stats``, computed that way for sparse or wide ``stats``; a few dense
    columns are faster gathered one by one."""
    n = stats.shape[0]
    if sparse.issparse(stats) or stats.shape[1] > GATHER_COLUMNS:
        return lambda indices: weighted_sums(counts(indices, n), stats)
    columns: np.ndarray = np.ascontiguousarray(np.asarray(stats).T)
    return lambda indices: np.stack([col[indices].sum(axis=1) for col in columns], axis=1)


def as_stats(stats: ArrayLike | Stats) -> Stats:
    """Per-item statistics as a 2-D float64 array or CSR array; non-finite values raise."""
    if sparse.issparse(stats):
        matrix = sparse.csr_array(stats, dtype=np.float64)
        values = matrix.data
    else:
        matrix = np.asarray(stats, dtype=np.float64)
        values = matrix
    if matrix.ndim != 2:
        raise ValueError(f"per-item statistics must be 2-D (items, k), got shape {matrix.shape}")
    if not np.isfinite(values).all():
        raise ValueError("per-item statistics must be finite (no NaN or inf)")
    return matrix


def weighted_sums(weights: np.ndarray, stats: Stats) -> np.ndarray:
    """``weights (rows, n) @ stats (n, k)`` as a dense ``(rows, k)`` array (stats may be sparse)."""
    if sparse.issparse(stats):
        return np.asarray(stats.T @ weights.T).T
    return np.asarray(weights @ stats)


def row_block(stats: Stats, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``stats`` as a dense array."""
    block: Any = stats[start:stop]  # ndarray or scipy.sparse (untyped here)
    return np.asarray(block.toarray() if sparse.issparse(block) else block)


def swap_chunks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Random 0/1 swap masks ``(rows, n)`` float64 (each entry 1 with probability 1/2), or,
    when ``2 ** n <= resamples``, all ``2 ** n`` masks once (an exact test)."""
    if exact_swaps(n, resamples):
        codes = np.arange(2**n)[:, None]
        yield ((codes >> np.arange(n)) & 1).astype(np.float64)
        return
    rng = np.random.default_rng(seed)
    rows, width = chunk_rows(n), (n + 7) // 8
    for start in range(0, resamples, rows):
        size = min(rows, resamples - start)
        raw = np.frombuffer(rng.bytes(size * width), dtype=np.uint8).reshape(size, width)
        yield np.unpackbits(raw, axis=1, count=n).astype(np.float64)


def exact_swaps(n: int, resamples: int) -> bool:
    """Whether all ``2 ** n`` swap patterns fit in ``resamples`` (then they are enumerated)."""
    return n < 63 and 2**n <= resamples


def subset_chunks(mask: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Random relabellings of ``mask`` (same number of True), ``(rows, n)`` float64; or all
    ``comb(n, m)`` of them when they fit in ``resamples`` (an exact test)."""
    n, m = len(mask), int(mask.sum())
    if math.comb(n, m) <= resamples:
        chosen = np.array(list(itertools.combinations(range(n), m)), dtype=np.int64)
        masks = np.zeros((len(chosen), n))
        np.put_along_axis(masks, chosen.reshape(len(chosen), m), 1.0, axis=1)
        yield masks
        return
    rng = np.random.default_rng(seed)
    rows = chunk_rows(n)
    for start in range(0, resamples, rows):
        tiled = np.broadcast_to(mask.astype(np.float64), (min(rows, resamples - start), n))
        yield rng.permuted(tiled, axis=1)


def permutation_pvalue(null: np.ndarray, observed: float, exact: bool) -> float:
    """Two-sided p-value as ``scipy.stats.permutation_test``: ``2 * min(P(null <= t),
    P(null >= t))`` clipped to 1, where an exact test counts all permutations and a random
    one adds the observed statistic (``(count + 1) / (resamples + 1)``); ties within
    ``100 * eps * |t|`` count as equal."""
    adjustment = 0 if exact else 1
    gamma = abs(np.finfo(np.float64).eps * 100 * observed)
    less = (np.count_nonzero(null <= observed + gamma) + adjustment) / (null.size + adjustment)
    greater = (np.count_nonzero(null >= observed - gamma) + adjustment) / (null.size + adjustment)
    return float(min(1.0, 2 * min(less, greater)))
