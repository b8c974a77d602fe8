"""Comparing two runs (A = baseline, B = candidate) scored on the same items.

Protocol (inputs are aligned by item: row ``i`` of A and of B score the same item):

* Deltas are ``B - A``. Paired bootstrap: each resample draws one set of item indices and
  evaluates both runs on it (the same stream as :mod:`tasks.stats.bootstrap`), so the
  interval is for the delta of the metric, not two separate intervals.
* Paired permutation test (H0: A and B are exchangeable within each item): each item's A and
  B values (or per-item sufficient-statistic rows) are swapped with probability 1/2; for a mean
  this is flipping the sign of the item's difference. Two-sided p-value with the convention of
  ``scipy.stats.permutation_test(permutation_type="samples")``: ``2 * min(P(null <= t),
  P(null >= t))`` clipped to 1, the observed statistic counted among ``resamples`` random
  swaps (``(count + 1) / (resamples + 1)``), or all ``2 ** n`` swaps when they fit (exact).
* Slice vs rest (H0: the slice is a random subset): difference of means of a subset and the
  other items, relabelling the items at random with the slice size fixed, same p-value
  convention (``permutation_type="independent"``; exact when ``comb(n, m) <= resamples``).
* McNemar (0/1 hits): exact two-sided binomial test of the discordant pairs,
  ``scipy.stats.binomtest(b_only, a_only + b_only, 0.5).pvalue``; 1.0 with no discordant pair.
* Effect sizes: Cohen's ``d_z = mean(B - A) / sd(B - A)`` (ddof 1); for hits, the discordant
  counts and their odds ratio ``b_only / a_only``.
* Holm-Bonferroni adjusted p-values, as statsmodels ``multipletests(method="holm")``.
* NaN: items where either run is NaN are dropped (mean tests, d_z); hits must be 0/1 and
  sufficient statistics finite, else ``ValueError``. All randomness is seeded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.stats import binom

from tasks.stats.bootstrap import (
    DEFAULT_SETTINGS,
    BootstrapSettings,
    Interval,
    Jackknife,
    bootstrap_corpus,
    bootstrap_indices,
    bootstrap_mean,
)
from tasks.stats.resampling import (
    IndexStatistic,
    Stats,
    SumsStatistic,
    as_stats,
    exact_swaps,
    permutation_pvalue,
    subset_chunks,
    swap_chunks,
    weighted_sums,
)

DEFAULT_PERMUTATIONS = 9999


@dataclass(frozen=True)
class PermutationResult:
    """Observed ``statistic``, two-sided ``pvalue``, the number of permutations in the null
    distribution and whether they were all of them (``exact``)."""

    statistic: float
    pvalue: float
    resamples: int
    exact: bool


@dataclass(frozen=True)
class McNemarResult:
    """Discordant pairs (``a_only``: A hit, B miss; ``b_only``: the reverse), the exact
    two-sided p-value and the odds ratio ``b_only / a_only`` (inf / NaN when 0)."""

    a_only: int
    b_only: int
    pvalue: float
    odds_ratio: float


def paired_values(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Aligned per-item values of both runs, items NaN in either dropped; inf raises."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"paired values must be 1-D and aligned, got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    if np.isinf(x[keep]).any() or np.isinf(y[keep]).any():
        raise ValueError("paired values must not be infinite")
    return x[keep], y[keep]


def paired_bootstrap_mean(
    a: ArrayLike, b: ArrayLike, settings: BootstrapSettings = DEFAULT_SETTINGS
) -> Interval:
    """CI of ``mean(B) - mean(A)``: both means on the same resampled items, i.e. the mean of
    the per-item differences."""
    x, y = paired_values(a, b)
    return bootstrap_mean(y - x, settings)


def paired_stats(stats_a: ArrayLike | Stats, stats_b: ArrayLike | Stats) -> Stats:
    """``[A | B]`` side by side ``(n, 2k)``, so one product sums both runs per resample."""
    left, right = as_stats(stats_a), as_stats(stats_b)
    if left.shape != right.shape or left.shape[0] == 0:
        raise ValueError(f"paired statistics must be aligned and non-empty, got {left.shape} "
                         f"and {right.shape}")
    if sparse.issparse(left) or sparse.issparse(right):
        return sparse.hstack([left, right], format="csr")
    return np.hstack([left, right])


def delta_statistic(statistic: SumsStatistic, k: int) -> SumsStatistic:
    """``fn(sums of [A | B]) -> statistic(B sums) - statistic(A sums)``."""
    return lambda sums: statistic(sums[:, k:]) - statistic(sums[:, :k])


def paired_bootstrap_corpus(
    stats_a: ArrayLike | Stats, stats_b: ArrayLike | Stats, statistic: SumsStatistic,
    settings: BootstrapSettings = DEFAULT_SETTINGS,
) -> Interval:
    """CI of ``statistic(B sums) - statistic(A sums)`` on the same resampled items."""
    both = paired_stats(stats_a, stats_b)
    return bootstrap_corpus(both, delta_statistic(statistic, both.shape[1] // 2), settings)


def paired_bootstrap_indices(
    n: int, statistic_a: IndexStatistic, statistic_b: IndexStatistic,
    settings: BootstrapSettings = DEFAULT_SETTINGS,
    jackknife_a: Jackknife | None = None, jackknife_b: Jackknife | None = None,
) -> Interval:
    """CI of ``statistic_b - statistic_a`` (e.g. AUROC) on the same resampled indices; BCa
    uses ``jackknife_b() - jackknife_a()`` when both are given, else the brute force."""
    return bootstrap_indices(n, lambda idx: statistic_b(idx) - statistic_a(idx), settings,
                             _delta_jackknife(jackknife_a, jackknife_b))


def _delta_jackknife(ja: Jackknife | None, jb: Jackknife | None) -> Jackknife | None:
    """Leave-one-out values of the delta, when both runs have them."""
    if ja is None or jb is None:
        return None
    return lambda: jb() - ja()


def _swap_null(
    both: Stats, statistic: SumsStatistic, chunks: Iterator[np.ndarray]
) -> np.ndarray:
    """Null distribution: per swap mask ``s``, A sums ``+ s @ (B - A)``, B sums ``- s @ ...``."""
    k = both.shape[1] // 2
    total = np.asarray(both.sum(axis=0), dtype=np.float64).reshape(1, -1)
    diff = both[:, k:] - both[:, :k]
    delta = delta_statistic(statistic, k)
    parts = []
    for mask in chunks:
        moved = weighted_sums(mask, diff)
        parts.append(delta(total + np.hstack([moved, -moved])))
    return np.concatenate(parts)


def paired_permutation_corpus(
    stats_a: ArrayLike | Stats, stats_b: ArrayLike | Stats, statistic: SumsStatistic,
    resamples: int = DEFAULT_PERMUTATIONS, seed: int = 0,
) -> PermutationResult:
    """Permutation test of ``statistic(B sums) - statistic(A sums)``, swapping each item's
    A and B statistic rows at random."""
    both = paired_stats(stats_a, stats_b)
    n, k = both.shape[0], both.shape[1] // 2
    total = np.asarray(both.sum(axis=0), dtype=np.float64).reshape(1, -1)
    observed = float(delta_statistic(statistic, k)(total)[0])
    null = _swap_null(both, statistic, swap_chunks(n, resamples, seed))
    exact = exact_swaps(n, resamples)
    return PermutationResult(observed, permutation_pvalue(null, observed, exact), null.size,
                             exact)


def paired_permutation_mean(
    a: ArrayLike, b: ArrayLike, resamples: int = DEFAULT_PERMUTATIONS, seed: int = 0
) -> PermutationResult:
    """Permutation test of ``mean(B - A)`` by random sign flips of the per-item differences
    (NaN pairs dropped)."""
    x, y = paired_values(a, b)
    if x.size == 0:
        raise ValueError("paired permutation test needs at least one item")
    diff = y - x
    observed = float(diff.mean())
    null = np.concatenate([(diff.sum() - 2 * (mask @ diff)) / diff.size
                           for mask in swap_chunks(diff.size, resamples, seed)])
    exact = exact_swaps(diff.size, resamples)
    return PermutationResult(observed, permutation_pvalue(null, observed, exact), null.size,
                             exact)


def hits(values: ArrayLike) -> np.ndarray:
    """0/1 (or bool) per-item hits as a bool array; anything else raises."""
    array = np.asarray(values)
    if array.ndim != 1 or not np.isin(array, (0, 1)).all():
        raise ValueError("hits must be a 1-D array of 0/1 values (no NaN)")
    return array.astype(bool)


def mcnemar(a_hits: ArrayLike, b_hits: ArrayLike) -> McNemarResult:
    """McNemar's exact test of two runs' hit/miss outcomes on the same items."""
    a, b = hits(a_hits), hits(b_hits)
    if a.shape != b.shape:
        raise ValueError(f"hits must be aligned, got {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = a_only + b_only
    pvalue = min(1.0, 2 * float(binom.cdf(min(a_only, b_only), discordant, 0.5)))
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = float(np.float64(b_only) / np.float64(a_only))
    return McNemarResult(a_only, b_only, pvalue if discordant else 1.0, odds)


def cohens_dz(a: ArrayLike, b: ArrayLike) -> float:
    """Paired effect size ``mean(B - A) / sd(B - A)`` (ddof 1); NaN for < 2 items or sd 0."""
    x, y = paired_values(a, b)
    diff = y - x
    sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    return float(diff.mean()) / sd if sd > 0 else math.nan


def holm(pvalues: Sequence[float] | ArrayLike) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given): the running maximum of
    ``(m - j) * p_(j)`` over the ascending p-values, capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must lie in [0, 1] (no NaN)")
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(p.size, 0, -1)))
    out = np.empty_like(p)
    out[order] = adjusted
    return out


def _slice_inputs(values: ArrayLike, in_slice: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Finite values and the slice mask, NaN items dropped; both groups must be non-empty."""
    x = np.asarray(values, dtype=np.float64)
    mask = np.asarray(in_slice, dtype=bool)
    if x.ndim != 1 or mask.shape != x.shape:
        raise ValueError("values and in_slice must be 1-D of the same length")
    keep = ~np.isnan(x)
    x, mask = x[keep], mask[keep]
    if mask.all() or not mask.any() or np.isinf(x).any():
        raise ValueError("slice and rest must both be non-empty and values finite")
    return x, mask


def slice_vs_rest(
    values: ArrayLike, in_slice: ArrayLike, resamples: int = DEFAULT_PERMUTATIONS, seed: int = 0
) -> PermutationResult:
    """Permutation test of ``mean(slice) - mean(rest)`` (NaN items dropped)."""
    x, mask = _slice_inputs(values, in_slice)
    m, n, total = int(mask.sum()), x.size, x.sum()
    null = np.concatenate([(s @ x) / m - (total - s @ x) / (n - m)
                           for s in subset_chunks(mask, resamples, seed)])
    observed = float(x[mask].mean() - x[~mask].mean())
    exact = math.comb(n, m) <= resamples
    return PermutationResult(observed, permutation_pvalue(null, observed, exact), null.size,
                             exact)
