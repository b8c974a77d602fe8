"""stratified: a seeded sample spread over the values of a metadata column (every background,
source or class gets its part), missing values forming their own stratum."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import SamplingStrategy
from tasks.review.strategies.base import (
    SamplingContext,
    StrategyError,
    draw,
    register_strategy,
    require,
)

MISSING = "(missing)"


@register_strategy("stratified")
def stratified(candidates: pd.DataFrame, n: int, spec: SamplingStrategy,
               context: SamplingContext) -> pd.Index:
    """``min(n, candidates)`` items: per stratum of ``spec.column`` a quota (``allocation``:
    proportional to its size, or equal) drawn at random; strata in order of first appearance,
    each stratum's items in draw order. Missing values form the stratum ``(missing)``."""
    if spec.column is None:
        raise StrategyError("stratified needs column: the metadata column to stratify by")
    groups = strata(require(candidates, spec.column))
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    count = min(max(n, 0), int(sizes.sum()))
    quotas = (proportional_quotas if spec.allocation == "proportional" else equal_quotas)(
        sizes, count)
    labels = candidates.index
    picks = [draw(labels[g], int(q), context.rng) for g, q in zip(groups, quotas, strict=True)]
    return labels[:0].append(picks) if picks else labels[:0]


def strata(values: pd.Series) -> list[np.ndarray]:
    """Positions of each stratum's rows, strata in order of first appearance."""
    keys = values.map(_key).where(values.notna(), MISSING)
    codes, _ = pd.factorize(keys)
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes))[:-1]) if len(codes) else []


def _key(value: Any) -> Hashable:
    """A grouping key: the value, or its repr when unhashable (lists, arrays)."""
    return value if isinstance(value, Hashable) else repr(value)


def proportional_quotas(sizes: np.ndarray, n: int) -> np.ndarray:
    """``n`` (at most ``sizes.sum()``) split in proportion to ``sizes`` by largest remainder;
    equal remainders favour the earlier stratum."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros_like(sizes)
    quotas, remainders = np.divmod(sizes * n, total)
    extra = np.argsort(-remainders, kind="stable")[: n - int(quotas.sum())]
    quotas[extra] += 1
    return quotas


def equal_quotas(sizes: np.ndarray, n: int) -> np.ndarray:
    """``n`` (at most ``sizes.sum()``) split equally; a stratum too small for its part gives
    the rest to the others, and a remainder goes one each to the earliest strata with room."""
    quotas = np.zeros_like(sizes)
    while n > 0 and (room := np.flatnonzero(quotas < sizes)).size:
        share = max(1, n // room.size)
        for stratum in room:
            give = min(share, int(sizes[stratum] - quotas[stratum]), n)
            quotas[stratum] += give
            n -= give
    return quotas
