"""Statistics that need the resampled items themselves (order and rank statistics).

Each comes as ``*_of_resamples(...) -> fn(indices (b, n)) -> (b,)`` for
:func:`tasks.stats.bootstrap.bootstrap_indices`, with a closed-form ``*_leave_one_out`` for the
BCa acceleration, and a ready ``bootstrap_*`` wrapper. A resample is a multiset of items, so
AUROC is computed from how often each item was drawn (ties get half credit, the Mann-Whitney
form, equal to ``sklearn.metrics.roc_auc_score``); it is NaN on a resample lacking one class.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from tasks.stats.bootstrap import DEFAULT_SETTINGS, BootstrapSettings, Interval, bootstrap_indices
from tasks.stats.resampling import IndexStatistic, counts


def median_of_resamples(values: ArrayLike) -> IndexStatistic:
    """``fn(indices) ->`` the median of every resample (``np.median``)."""
    x = np.asarray(values, dtype=np.float64)
    return lambda indices: np.median(x[indices], axis=1)


def median_leave_one_out(values: ArrayLike) -> np.ndarray:
    """The median without item ``i``, for every ``i`` (closed form from the sorted values)."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    ordered = np.sort(x)
    position = np.empty(n, dtype=np.int64)
    position[np.argsort(x, kind="stable")] = np.arange(n)
    k = (n - 1) // 2  # remaining n - 1 items; their middle index (lower middle when even)
    if (n - 1) % 2:  # n - 1 odd: one middle element
        return np.where(position <= k, ordered[min(k + 1, n - 1)], ordered[k])
    low = np.where(position <= k - 1, ordered[k], ordered[max(k - 1, 0)])
    high = np.where(position <= k, ordered[min(k + 1, n - 1)], ordered[k])
    return (low + high) / 2


def bootstrap_median(
    values: ArrayLike, settings: BootstrapSettings = DEFAULT_SETTINGS
) -> Interval:
    """CI of the median of per-item values (e.g. ranks); NaN values raise."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or np.isnan(x).any():
        raise ValueError("median: values must be 1-D without NaN")
    return bootstrap_indices(x.size, median_of_resamples(x), settings,
                             lambda: median_leave_one_out(x))


def _checked_auroc_inputs(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Scores (finite floats) and 0/1 labels of the same length."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError("AUROC: scores and labels must be 1-D of the same length")
    if not np.isfinite(s).all() or not np.isin(y, (0, 1)).all():
        raise ValueError("AUROC: scores must be finite and labels 0/1")
    return s, y.astype(bool)


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(items sorted by score, start of every group of equal scores in that order)."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return order, starts


def weighted_auroc(weights: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of every row of item ``weights (b, n)`` (how often each item is drawn).

    ``U = sum over score groups of positives * (negatives below + negatives tied / 2)``,
    divided by ``positives * negatives``; NaN where a row lacks a class.
    """
    order, starts = _tie_groups(scores)
    w = weights[:, order]
    positive = labels[order]
    pos = np.add.reduceat(w * positive, starts, axis=1)
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    u = (pos * (below + neg / 2)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return u / (pos.sum(axis=1) * neg.sum(axis=1))


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """AUROC of ``scores`` for 0/1 ``labels`` (ties averaged); NaN with a single class."""
    s, y = _checked_auroc_inputs(scores, labels)
    return float(weighted_auroc(np.ones((1, s.size)), s, y)[0])


def auroc_of_resamples(scores: ArrayLike, labels: ArrayLike) -> IndexStatistic:
    """``fn(indices) ->`` the AUROC of every resample (NaN where a class is missing)."""
    s, y = _checked_auroc_inputs(scores, labels)
    return lambda indices: weighted_auroc(counts(indices, s.size), s, y)


def auroc_leave_one_out(scores: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """The AUROC without item ``i``, for every ``i``: a positive takes its credit
    (negatives below + tied / 2) out of U, a negative the positives above + tied / 2."""
    s, y = _checked_auroc_inputs(scores, labels)
    order, starts = _tie_groups(s)
    group = np.empty(s.size, dtype=np.int64)
    group[order] = np.cumsum(np.isin(np.arange(s.size), starts)) - 1
    pos = np.bincount(group, weights=y, minlength=len(starts))
    neg = np.bincount(group, weights=~y, minlength=len(starts))
    neg_below = np.cumsum(neg) - neg
    pos_above = pos.sum() - np.cumsum(pos)
    credit = np.where(y, neg_below[group] + neg[group] / 2, pos_above[group] + pos[group] / 2)
    n_pos, n_neg = pos.sum() - y, neg.sum() - ~y
    u = (pos * (neg_below + neg / 2)).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (u - credit) / (n_pos * n_neg)


def bootstrap_auroc(
    scores: ArrayLike, labels: ArrayLike, settings: BootstrapSettings = DEFAULT_SETTINGS
) -> Interval:
    """CI of the AUROC; resamples that lack a class are left out (``Interval.undefined``)."""
    s, y = _checked_auroc_inputs(scores, labels)
    if s.size and (y.all() or not y.any()):
        return Interval(math.nan, math.nan, math.nan, "none")
    return bootstrap_indices(s.size, auroc_of_resamples(s, y), settings,
                             lambda: auroc_leave_one_out(s, y))
