"""The difference of one metric between two independent samples (e.g. the train and the test
split of a dataset: the generalisation gap), with an unpaired bootstrap interval.

Protocol: the two tables share no items, so each is resampled on its own (rows with
replacement, ``resamples`` times, independent streams: seeds ``seed`` and ``seed + 1``); the
``b``-th replicate of the difference is ``statistic(B*_b) - statistic(A*_b)``, and the interval
is the percentile interval of those replicates — the two-sample bootstrap of Efron & Tibshirani
(1993, ch. 8), the same as ``scipy.stats.bootstrap((a, b), ..., paired=False)``. The statistic
is any ``Estimate`` (means, corpus metrics from sufficient statistics, AUROC, medians), so a
corpus metric is recomputed on every resample, never averaged per item. BCa is not offered here
(its acceleration needs a two-sample jackknife); intervals are always percentile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.stats.bootstrap import BootstrapSettings, Interval, finite_values, make_interval
from tasks.stats.estimates import (
    SUMS_STATISTICS,
    Estimate,
    point_value,
    pooled_median_statistic,
    sums_input,
)
from tasks.stats.rank import auroc_of_resamples, median_of_resamples
from tasks.stats.resampling import IndexStatistic, as_stats, resample, resampled_sums


@dataclass(frozen=True)
class Gap:
    """``b - a`` of one metric with its interval; ``a`` and ``b`` are the two values."""

    a: float
    b: float
    interval: Interval

    @property
    def difference(self) -> float:
        return self.interval.estimate


def index_statistic(estimate: Estimate, rows: pd.DataFrame) -> tuple[int, IndexStatistic]:
    """(items, ``fn(indices (r, n)) -> (r,)``): the metric of every resample of ``rows``."""
    name, columns = estimate.statistic, list(estimate.columns)
    if name == "mean":
        x = finite_values(rows[columns[0]].to_numpy(np.float64))
        return x.size, lambda indices: x[indices].mean(axis=1)
    if name in SUMS_STATISTICS:
        stats, statistic = sums_input(estimate, rows)
        sums = resampled_sums(as_stats(stats))
        return len(rows), lambda indices: statistic(sums(indices))
    if name == "auroc":
        return len(rows), auroc_of_resamples(rows[columns[0]].to_numpy(np.float64),
                                             rows[columns[1]].to_numpy(np.float64))
    if name == "median":
        return len(rows), median_of_resamples(rows[columns[0]].to_numpy(np.float64))
    if name == "pooled_median":
        return len(rows), pooled_median_statistic(rows[columns[0]])
    raise ValueError(f"unknown statistic {name!r}")


def replicates(estimate: Estimate, table: pd.DataFrame, resamples: int, seed: int
               ) -> np.ndarray | None:
    """The bootstrap distribution of the metric over ``table`` (None: fewer than 2 items)."""
    n, statistic = index_statistic(estimate, estimate.rows(table))
    if n < 2:
        return None
    return resample(n, statistic, resamples, seed)


def unpaired_gap(estimate: Estimate, table_a: pd.DataFrame, table_b: pd.DataFrame,
                 settings: BootstrapSettings) -> Gap:
    """The metric on ``a`` and on ``b``, and the percentile interval of ``b - a``."""
    a, b = point_value(estimate, table_a), point_value(estimate, table_b)
    difference = b - a
    nan = Interval(math.nan, math.nan, difference, "none")
    if settings.resamples == 0 or math.isnan(difference):
        return Gap(a, b, nan)
    boot_a = replicates(estimate, table_a, settings.resamples, settings.seed)
    boot_b = replicates(estimate, table_b, settings.resamples, settings.seed + 1)
    if boot_a is None or boot_b is None:
        return Gap(a, b, nan)
    percentile = BootstrapSettings(settings.resamples, settings.level, "percentile",
                                   settings.seed)
    return Gap(a, b, make_interval(boot_b - boot_a, difference, percentile, lambda: np.empty(0)))
