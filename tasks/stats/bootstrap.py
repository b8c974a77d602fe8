"""Seeded bootstrap confidence intervals for evaluation metrics.

Protocol:

* Resampled: the evaluated items (images, questions, queries), ``n`` out of ``n`` with
  replacement, ``settings.resamples`` times, from ``default_rng(settings.seed)`` (see
  :mod:`tasks.stats.resampling`; the stream equals ``scipy.stats.bootstrap``'s with
  ``batch=chunk_rows(n)``). Same seed and data -> identical interval.
* Held fixed: everything computed per item (model outputs, per-item scores, an item's clipped
  n-gram matches and closest reference length); only which items enter the sample changes.
* Three forms of statistic, all vectorised over resamples: the mean of per-item values
  (:func:`bootstrap_mean`); a corpus metric recomputed from summed per-item sufficient
  statistics, ``counts (b, n) @ stats (n, k)`` (:func:`bootstrap_corpus`); and any function of
  the resampled indices (:func:`bootstrap_indices`, e.g. AUROC, the median).
* Interval: central ``level`` percentile interval of the bootstrap distribution (linear
  interpolation), or BCa (Efron 1987) with the acceleration from the jackknife (leave-one-out)
  values, the formulas of ``scipy.stats.bootstrap(method="BCa")``. Leave-one-out values are
  closed form for means (``(total - x_i) / (n - 1)``) and ``total - row`` for sums.
* NaN: :func:`bootstrap_mean` drops NaN items before resampling (the mean is over the defined
  items) and raises on infinities. Resamples on which a statistic is undefined (NaN, e.g. the
  AUROC of a resample holding one class) are left out of the interval and counted in
  ``Interval.undefined``.
* Undefined intervals: fewer than two items or ``resamples == 0`` give ``low = high = NaN``
  (``method == "none"``). Where BCa cannot be computed (degenerate bootstrap distribution,
  zero jackknife variance, infinite bias correction) the percentile interval is returned
  instead, with ``method == "percentile"`` and the reason in ``Interval.fallback``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

from tasks.stats.resampling import (
    IndexStatistic,
    Stats,
    SumsStatistic,
    as_stats,
    chunk_rows,
    resample,
    resampled_sums,
    row_block,
)

Method = Literal["percentile", "bca"]
IntervalMethod = Literal["percentile", "bca", "none"]  # the method an interval actually used
Jackknife = Callable[[], np.ndarray]  # -> (n,) leave-one-out statistic values


@dataclass(frozen=True)
class BootstrapSettings:
    """How to bootstrap: ``resamples`` (0 = no interval), two-sided ``level``, the interval
    ``method`` and the ``seed`` of the resampling stream."""

    resamples: int = 1000
    level: float = 0.95
    method: Method = "percentile"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resamples < 0:
            raise ValueError(f"resamples must be >= 0, got {self.resamples}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if self.method not in ("percentile", "bca"):
            raise ValueError(f"method must be 'percentile' or 'bca', got {self.method!r}")


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval (NaN bounds where undefined) and the full-sample
    ``estimate``. ``method`` is the one actually used ("percentile", "bca" or "none");
    ``fallback`` says why BCa was replaced by percentile; ``undefined`` counts resamples
    whose statistic was NaN (left out)."""

    low: float
    high: float
    estimate: float = math.nan
    method: IntervalMethod = "none"
    fallback: str = ""
    undefined: int = 0

    def contains(self, value: float) -> bool:
        """Whether ``low <= value <= high`` (False for an undefined interval)."""
        return bool(self.low <= value <= self.high)


DEFAULT_SETTINGS = BootstrapSettings()


def no_interval(estimate: float) -> Interval:
    """The undefined interval around ``estimate`` (too few items, or resampling off)."""
    return Interval(math.nan, math.nan, estimate, "none")


def _all_equal(values: np.ndarray) -> bool:
    """Whether ``values`` are equal up to rounding (a few ulps of the largest magnitude)."""
    scale = float(np.abs(values).max(initial=0.0))
    return float(np.ptp(values)) <= 16 * float(np.finfo(np.float64).eps) * scale


def bca_probabilities(
    boot: np.ndarray, estimate: float, jackknife: np.ndarray, alpha: float
) -> tuple[float, float] | str:
    """BCa quantile levels ``(alpha_1, alpha_2)`` as scipy computes them, or why not."""
    below, at_most = np.count_nonzero(boot < estimate), np.count_nonzero(boot <= estimate)
    z0 = float(ndtri((below + at_most) / (2 * boot.size)))
    centred = jackknife.mean() - jackknife
    spread = float((centred**2).sum())
    if not math.isfinite(z0):
        return "bootstrap distribution entirely on one side of the estimate"
    if not math.isfinite(spread) or _all_equal(jackknife):
        return "jackknife values undefined or all equal (no acceleration)"
    accel = float((centred**3).sum()) / (6 * spread**1.5)
    z = float(ndtri(alpha))
    low, high = (float(ndtr(z0 + (z0 + q) / (1 - accel * (z0 + q)))) for q in (z, -z))
    if not (math.isfinite(low) and math.isfinite(high)):
        return "BCa quantile levels are undefined"
    return low, high


def make_interval(
    boot: np.ndarray, estimate: float, settings: BootstrapSettings, jackknife: Jackknife
) -> Interval:
    """Percentile or BCa interval from the bootstrap distribution ``boot`` (NaN left out)."""
    defined = boot[~np.isnan(boot)]
    undefined = boot.size - defined.size
    if defined.size == 0 or math.isnan(estimate):
        return Interval(math.nan, math.nan, estimate, "none", undefined=undefined)
    alpha = (1 - settings.level) / 2
    levels, reason = (alpha, 1 - alpha), ""
    method: IntervalMethod = "percentile"
    if settings.method == "bca":
        bca = bca_probabilities(defined, estimate, jackknife(), alpha)
        if isinstance(bca, str):
            reason = f"BCa not computable, percentile used: {bca}"
        else:
            levels, method = bca, "bca"
    low, high = np.quantile(defined, levels)
    return Interval(float(low), float(high), estimate, method, reason, undefined)


def finite_values(values: ArrayLike) -> np.ndarray:
    """1-D float64 values with NaN items dropped; infinities raise ``ValueError``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"per-item values must be 1-D, got shape {array.shape}")
    array = array[~np.isnan(array)]
    if np.isinf(array).any():
        raise ValueError("per-item values must not be infinite")
    return array


def bootstrap_mean(values: ArrayLike, settings: BootstrapSettings = DEFAULT_SETTINGS) -> Interval:
    """CI of the mean of per-item values (hits, accuracies, CLIPScores); NaN items dropped."""
    x = finite_values(values)
    estimate = float(x.mean()) if x.size else math.nan
    if x.size < 2 or settings.resamples == 0:
        return no_interval(estimate)
    boot = resample(x.size, lambda idx: x[idx].mean(axis=1), settings.resamples, settings.seed)
    return make_interval(boot, estimate, settings, lambda: (x.sum() - x) / (x.size - 1))


def leave_one_out_sums(stats: Stats, statistic: SumsStatistic) -> np.ndarray:
    """Jackknife values of a sums statistic: ``statistic(total - row_i)`` for every item."""
    total = np.asarray(stats.sum(axis=0), dtype=np.float64).ravel()
    n, step = stats.shape[0], chunk_rows(stats.shape[1])
    parts = [statistic(total - row_block(stats, start, start + step))
             for start in range(0, n, step)]
    return np.concatenate(parts).astype(np.float64)


def bootstrap_corpus(
    stats: ArrayLike | Stats, statistic: SumsStatistic,
    settings: BootstrapSettings = DEFAULT_SETTINGS,
) -> Interval:
    """CI of a corpus metric ``statistic(column sums)`` of per-item sufficient statistics
    ``stats (n, k)`` (dense or scipy.sparse); a resample's sums are ``counts (n,) @ stats``."""
    matrix = as_stats(stats)
    n = matrix.shape[0]
    total = np.asarray(matrix.sum(axis=0), dtype=np.float64).reshape(1, -1)
    estimate = float(statistic(total)[0]) if n else math.nan
    if n < 2 or settings.resamples == 0:
        return no_interval(estimate)
    sums = resampled_sums(matrix)
    boot = resample(n, lambda idx: statistic(sums(idx)), settings.resamples, settings.seed)
    return make_interval(boot, estimate, settings, lambda: leave_one_out_sums(matrix, statistic))


def leave_one_out_indices(n: int, statistic: IndexStatistic) -> np.ndarray:
    """Jackknife values of an index statistic by brute force (``n`` statistics of ``n - 1``
    items, in chunks): O(n^2); pass a closed form to :func:`bootstrap_indices` when known."""
    base = np.arange(n - 1)
    step = chunk_rows(n)
    parts = []
    for start in range(0, n, step):
        left_out = np.arange(start, min(n, start + step))[:, None]
        parts.append(statistic(base + (base >= left_out)))
    return np.concatenate(parts).astype(np.float64)


def bootstrap_indices(
    n: int, statistic: IndexStatistic, settings: BootstrapSettings = DEFAULT_SETTINGS,
    jackknife: Jackknife | None = None,
) -> Interval:
    """CI of any statistic of the resampled items: ``statistic(indices (b, n)) -> (b,)``.

    ``jackknife`` (leave-one-out values, only used by BCa) defaults to the O(n^2) brute force.
    """
    estimate = float(statistic(np.arange(n)[None])[0]) if n else math.nan
    if n < 2 or settings.resamples == 0:
        return no_interval(estimate)
    boot = resample(n, statistic, settings.resamples, settings.seed)
    return make_interval(boot, estimate, settings,
                         jackknife or (lambda: leave_one_out_indices(n, statistic)))
