"""Review sampling strategies: plain functions registered by name.

A strategy is called as ``strategy(candidates, n, spec, context)`` and returns the labels of the
rows it chooses, at most ``n``, in the order it chose them:

- ``candidates``: the scored rows still free (earlier strategies' choices removed), in table
  order, with every column of the per-sample table;
- ``spec``: its entry of ``review.strategies`` (``tasks.config.SamplingStrategy``);
- ``context``: the task's review column and direction and a seeded random stream of its own.

A strategy that cannot run on this table raises :class:`StrategyError` (a column it needs is
missing: :class:`MissingColumnError`); the sampler skips it with a warning and hands its quota on.
NaN values never qualify an item: ranking strategies leave rows without a value out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks.config import SamplingStrategy
from tasks.registry import Registry


class StrategyError(ValueError):
    """A strategy cannot run on this table (the sampler skips it with a warning)."""


class MissingColumnError(StrategyError):
    """A column a strategy needs is not in the per-sample table."""

    def __init__(self, column: str, available: list[str]) -> None:
        super().__init__(f"column {column!r} is not in the per-sample table; available: "
                         f"{', '.join(available)}")
        self.column = column


_RANK = re.compile(r"(^|_)rank(_|$)")


def is_rank_column(name: str) -> bool:
    """Rank-like columns (``i2t_rank``, ``best_t2i_rank``, ``t2i_rank_sum``): higher is worse."""
    return bool(_RANK.search(name))


@dataclass(frozen=True)
class SamplingContext:
    """What a strategy knows besides its spec: the task's review column (``metric``) and its
    direction, per-column ``higher_is_better`` where the run knows it, and a random stream
    seeded from ``review.seed`` (one per strategy, so one strategy's draws never shift
    another's)."""

    metric: str
    higher_is_worse: bool
    rng: np.random.Generator
    higher_is_better: Mapping[str, bool] = field(default_factory=dict)

    def worse_is_high(self, column: str, explicit: bool | None = None) -> bool:
        """Direction of ``column``: ``explicit`` when given; the task's for its review column;
        else ``higher_is_better``; else rank columns are worse when high, the rest when low."""
        if explicit is not None:
            return explicit
        if column == self.metric:
            return self.higher_is_worse
        if column in self.higher_is_better:
            return not self.higher_is_better[column]
        return is_rank_column(column)


Strategy = Callable[[pd.DataFrame, int, SamplingStrategy, SamplingContext], pd.Index]

STRATEGIES: Registry[Strategy] = Registry(
    "sampling strategy", package="tasks.review.strategies", skip=("base",))


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Decorator: ``@register_strategy("random")``."""
    return STRATEGIES.register(name)


def get_strategy(name: str) -> Strategy:
    return STRATEGIES.get(name)


def require(candidates: pd.DataFrame, column: str) -> pd.Series:
    """The column, or :class:`MissingColumnError` naming the columns there are."""
    if column not in candidates.columns:
        raise MissingColumnError(column, [str(c) for c in candidates.columns])
    return candidates[column]


def numeric(candidates: pd.DataFrame, column: str) -> pd.Series:
    """The column as floats (NaN where undefined); :class:`StrategyError` when not numeric."""
    values = require(candidates, column)
    try:
        return pd.to_numeric(values, errors="raise").astype(np.float64)
    except (TypeError, ValueError):
        raise StrategyError(f"column {column!r} is not numeric") from None


def smallest(values: pd.Series, n: int) -> pd.Index:
    """Labels of the ``n`` smallest values, smallest first; NaN never chosen, ties in table
    order."""
    defined = values.dropna()
    order = np.argsort(defined.to_numpy(), kind="stable")
    return defined.index[order[:max(n, 0)]]


def worst_first(values: pd.Series, n: int, worse_is_high: bool) -> pd.Index:
    """Labels of the ``n`` worst values, worst first (NaN never chosen, ties in table order)."""
    return smallest(-values if worse_is_high else values, n)


def draw(labels: pd.Index, n: int, rng: np.random.Generator) -> pd.Index:
    """A uniform sample of ``min(n, len(labels))`` labels without replacement, in draw order."""
    count = min(max(n, 0), len(labels))
    return labels[rng.choice(len(labels), size=count, replace=False)]
