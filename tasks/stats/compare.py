"""Paired comparison of two runs' per-sample tables, metric by metric.

Protocol: the tables are aligned on their row key (item id, or pair id for matching) and only
rows scored in both runs are kept. For every metric with an ``Estimate`` the delta is
``B - A``; its interval is a paired bootstrap (the same resampled rows for both runs); its
p-value is a two-sided paired permutation test (each row's A/B values swapped at random; the
observed statistic counts, as in ``scipy.stats.permutation_test``); hit/miss metrics (a mean
of 0/1 values: recall hits, accuracy) also get McNemar's exact test on the discordant rows,
which is then the reported test. The effect size is Cohen's d_z of the per-row differences for
means, and the delta in units of the pooled bootstrap standard error otherwise. p-values are
Holm-adjusted across the compared metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.stats.bootstrap import BootstrapSettings, Interval
from tasks.stats.estimates import (
    SUMS_STATISTICS,
    Estimate,
    point_value,
    pooled_median_statistic,
    sums_input,
)
from tasks.stats.paired import (
    cohens_dz,
    holm,
    mcnemar,
    paired_bootstrap_corpus,
    paired_bootstrap_indices,
    paired_bootstrap_mean,
    paired_permutation_corpus,
    paired_permutation_mean,
)
from tasks.stats.rank import auroc, auroc_of_resamples, median_of_resamples

INDEX_PERMUTATIONS = 999  # index statistics (AUROC, medians) are recomputed per permutation


@dataclass
class MetricComparison:
    metric: str
    a: float
    b: float
    delta: float  # b - a
    ci_low: float
    ci_high: float
    pvalue: float
    test: str  # permutation / mcnemar
    effect_size: float
    rows: int
    higher_is_better: bool
    p_holm: float = math.nan
    a_only: int | None = None  # McNemar: rows only A got right
    b_only: int | None = None

    @property
    def improved(self) -> bool:
        return (self.delta > 0) == self.higher_is_better and self.delta != 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def align(table_a: pd.DataFrame, table_b: pd.DataFrame, key: str) -> tuple[pd.DataFrame,
                                                                          pd.DataFrame]:
    """Rows scored in both tables, in the same order (by ``key``)."""
    scored_a = table_a[_scored(table_a)].drop_duplicates(key).set_index(key)
    scored_b = table_b[_scored(table_b)].drop_duplicates(key).set_index(key)
    common = scored_a.index.intersection(scored_b.index, sort=False)
    return scored_a.loc[common].reset_index(), scored_b.loc[common].reset_index()


def _scored(table: pd.DataFrame) -> pd.Series:
    if "status" not in table.columns:
        return pd.Series(True, index=table.index)
    return table["status"] == "scored"


def compare_tables(rows_a: pd.DataFrame, rows_b: pd.DataFrame, estimates: dict[str, Estimate],
                   higher_is_better: dict[str, bool], settings: BootstrapSettings,
                   permutations: int = 9999) -> list[MetricComparison]:
    """Every metric of ``estimates`` compared on aligned rows, with Holm-adjusted p-values."""
    results = [compare_metric(key, estimate, rows_a, rows_b, settings, permutations,
                              higher_is_better.get(key, not key.endswith("_rank")))
               for key, estimate in estimates.items()]
    finite = [r for r in results if not math.isnan(r.pvalue)]
    for result, adjusted in zip(finite, holm([r.pvalue for r in finite]), strict=True):
        result.p_holm = float(adjusted)
    return results


def compare_metric(key: str, estimate: Estimate, rows_a: pd.DataFrame, rows_b: pd.DataFrame,
                   settings: BootstrapSettings, permutations: int,
                   higher_is_better: bool) -> MetricComparison:
    a, b = _paired_rows(estimate, rows_a, rows_b)
    plain = Estimate(estimate.statistic, estimate.columns, estimate.options)  # rows filtered
    value_a, value_b = point_value(plain, a), point_value(plain, b)
    result = MetricComparison(key, value_a, value_b, value_b - value_a, math.nan, math.nan,
                              math.nan, "permutation", math.nan, len(a), higher_is_better)
    if len(a) < 2:
        return result
    if plain.statistic == "mean":
        return _compare_means(result, a, b, plain.columns[0], settings, permutations)
    if plain.statistic in SUMS_STATISTICS:
        return _compare_sums(result, plain, a, b, settings, permutations)
    return _compare_index(result, plain, a, b, settings)


def _paired_rows(estimate: Estimate, rows_a: pd.DataFrame, rows_b: pd.DataFrame
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The estimate's rows in both runs (``where`` from run A), defined in both."""
    keep = np.ones(len(rows_a), dtype=bool)
    if estimate.where is not None:
        column, value = estimate.where
        keep &= (rows_a[column].astype(str) == value).to_numpy()
    for column in estimate.columns:
        for rows in (rows_a, rows_b):
            if column in rows.columns:
                keep &= rows[column].notna().to_numpy()
    return rows_a[keep].reset_index(drop=True), rows_b[keep].reset_index(drop=True)


def _compare_means(result: MetricComparison, a: pd.DataFrame, b: pd.DataFrame, column: str,
                   settings: BootstrapSettings, permutations: int) -> MetricComparison:
    x, y = a[column].to_numpy(np.float64), b[column].to_numpy(np.float64)
    _fill(result, paired_bootstrap_mean(x, y, settings))
    result.pvalue = paired_permutation_mean(x, y, permutations, settings.seed).pvalue
    result.effect_size = cohens_dz(x, y)
    if np.isin(np.r_[x, y], (0.0, 1.0)).all():
        test = mcnemar(x, y)
        result.test, result.pvalue = "mcnemar", test.pvalue
        result.a_only, result.b_only = test.a_only, test.b_only
    return result


def _compare_sums(result: MetricComparison, estimate: Estimate, a: pd.DataFrame,
                  b: pd.DataFrame, settings: BootstrapSettings,
                  permutations: int) -> MetricComparison:
    stats_a, statistic = sums_input(estimate, a)
    stats_b, _ = sums_input(estimate, b)
    interval = paired_bootstrap_corpus(stats_a, stats_b, statistic, settings)
    _fill(result, interval)
    result.pvalue = paired_permutation_corpus(stats_a, stats_b, statistic, permutations,
                                              settings.seed).pvalue
    result.effect_size = _standardised(result.delta, interval, settings.level)
    return result


def _index_statistic(estimate: Estimate, rows: pd.DataFrame
                     ) -> Callable[[np.ndarray], np.ndarray]:
    columns = list(estimate.columns)
    if estimate.statistic == "auroc":
        return auroc_of_resamples(rows[columns[0]].to_numpy(np.float64),
                                  rows[columns[1]].to_numpy(np.float64))
    if estimate.statistic == "median":
        return median_of_resamples(rows[columns[0]].to_numpy(np.float64))
    if estimate.statistic == "pooled_median":
        return pooled_median_statistic(rows[columns[0]])
    raise ValueError(f"unknown statistic {estimate.statistic!r}")


def _compare_index(result: MetricComparison, estimate: Estimate, a: pd.DataFrame,
                   b: pd.DataFrame, settings: BootstrapSettings) -> MetricComparison:
    interval = paired_bootstrap_indices(len(a), _index_statistic(estimate, a),
                                        _index_statistic(estimate, b), settings)
    _fill(result, interval)
    result.pvalue = _swap_permutation(estimate, a, b, settings.seed)
    result.effect_size = _standardised(result.delta, interval, settings.level)
    return result


def _swap_permutation(estimate: Estimate, a: pd.DataFrame, b: pd.DataFrame, seed: int,
                      permutations: int = INDEX_PERMUTATIONS) -> float:
    """Two-sided p of the delta when each row's A/B inputs are swapped at random."""
    value = _full_value(estimate.statistic)
    columns = list(estimate.columns)
    inputs_a = [a[c].to_numpy() for c in columns]
    inputs_b = [b[c].to_numpy() for c in columns]
    observed = abs(value(inputs_b) - value(inputs_a))
    rng = np.random.default_rng(seed)
    extreme = 0
    for _ in range(permutations):
        swap = rng.random(len(a)) < 0.5
        mixed_a = [np.where(swap, y, x) for x, y in zip(inputs_a, inputs_b, strict=True)]
        mixed_b = [np.where(swap, x, y) for x, y in zip(inputs_a, inputs_b, strict=True)]
        extreme += abs(value(mixed_b) - value(mixed_a)) >= observed - 1e-12
    return (extreme + 1) / (permutations + 1)


def _full_value(statistic: str) -> Callable[[list[np.ndarray]], float]:
    if statistic == "auroc":
        return lambda inputs: auroc(inputs[0].astype(np.float64), inputs[1].astype(np.float64))
    if statistic == "median":
        return lambda inputs: float(np.median(inputs[0].astype(np.float64)))
    if statistic == "pooled_median":
        return lambda inputs: float(np.median(np.concatenate(
            [np.asarray(cell, np.float64) for cell in inputs[0]])))
    raise ValueError(f"unknown statistic {statistic!r}")


def _fill(result: MetricComparison, interval: Interval) -> None:
    result.ci_low, result.ci_high = interval.low, interval.high


def _standardised(delta: float, interval: Interval, level: float) -> float:
    """Delta over the bootstrap standard error implied by the interval's width."""
    from scipy.stats import norm

    width = interval.high - interval.low
    if not np.isfinite(width) or width <= 0:
        return math.nan
    return delta / (width / (2 * norm.ppf(0.5 + level / 2)))
