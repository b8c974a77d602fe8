"""Corpus metrics as vectorised functions of summed per-item sufficient statistics.

A corpus metric that is not a mean (corpus BLEU, F1) is a function of column sums of a per-item
matrix ``stats (n, k)``. Every function here maps sums ``(b, k) -> (b,)`` values, so
:func:`tasks.stats.bootstrap.bootstrap_corpus` and the paired tests evaluate all resamples of a
chunk at once. Layouts:

* BLEU (from ``tasks.metrics.captioning.bleu.bleu_sufficient_statistics``), ``k = 2N + 2``:
  clipped matches ``correct_1..N``, n-gram totals ``guess_1..N``, hypothesis length, closest
  reference length. The value is coco-caption's corpus BLEU-n (``Bleu(4).compute_score``,
  "closest"): ``(prod_{m<=n} (correct_m + 1e-15) / (guess_m + 1e-9)) ** (1 / n)`` times the
  brevity penalty ``exp(1 - 1 / ratio)`` when ``ratio = (testlen + 1e-15) / (reflen + 1e-9)``
  is below 1, all on corpus totals.
* Classification (:func:`confusion_contributions`), ``k = 3C``: per class ``tp``, then ``fp``,
  then ``fn``; an item adds 1 to ``tp[t]`` when correct, else to ``fp[p]`` and ``fn[t]``. F1 is
  ``2 tp / (2 tp + fp + fn)``, 0 where that is 0/0 (scikit-learn's ``zero_division=0``); macro
  F1 averages over all ``C`` classes, as ``tasks.metrics.classification`` does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse

from tasks.stats.resampling import SumsStatistic

_SMALL = 1e-9  # coco-caption's smoothing constants
_TINY = 1e-15


def bleu_statistic(order: int = 4) -> SumsStatistic:
    """``fn(sums (b, 2N + 2)) ->`` corpus BLEU-``order`` (``order <= N``) per row."""
    if order < 1:
        raise ValueError(f"BLEU order must be >= 1, got {order}")

    def statistic(sums: np.ndarray) -> np.ndarray:
        max_order = (sums.shape[1] - 2) // 2
        if sums.shape[1] != 2 * max_order + 2 or order > max_order:
            raise ValueError(f"BLEU-{order} needs 2N + 2 columns with N >= {order}, "
                             f"got {sums.shape[1]}")
        correct = sums[:, :order] + _TINY
        guess = sums[:, max_order : max_order + order] + _SMALL
        score = np.prod(correct / guess, axis=1) ** (1.0 / order)
        ratio = (sums[:, -2] + _TINY) / (sums[:, -1] + _SMALL)
        with np.errstate(divide="ignore", over="ignore"):
            return score * np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)

    return statistic


def confusion_contributions(
    truth: ArrayLike, predicted: ArrayLike, n_classes: int
) -> sparse.csr_array:
    """Per-item ``tp | fp | fn`` contributions ``(n, 3 * n_classes)`` (sparse: 1-2 per row)
    of integer class labels ``0 <= label < n_classes``."""
    t = np.asarray(truth, dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError("truth and predicted must be 1-D of the same length")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class labels must lie in [0, {n_classes})")
    hit = t == p
    rows = np.r_[np.flatnonzero(hit), np.flatnonzero(~hit), np.flatnonzero(~hit)]
    cols = np.r_[t[hit], n_classes + p[~hit], 2 * n_classes + t[~hit]]
    return sparse.csr_array((np.ones(rows.size), (rows, cols)), shape=(t.size, 3 * n_classes))


def _confusion_columns(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn), each ``(b, C)``, from sums in the ``tp | fp | fn`` layout."""
    if sums.shape[1] % 3:
        raise ValueError(f"confusion sums need 3C columns, got {sums.shape[1]}")
    c = sums.shape[1] // 3
    return sums[:, :c], sums[:, c : 2 * c], sums[:, 2 * c :]


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """``2 tp / (2 tp + fp + fn)``, 0 where the denominator is 0."""
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def accuracy_statistic(sums: np.ndarray) -> np.ndarray:
    """Accuracy ``sum(tp) / (sum(tp) + sum(fp))`` (every item is a tp or an fp)."""
    tp, fp, _ = _confusion_columns(sums)
    correct = tp.sum(axis=1)
    with np.errstate(invalid="ignore"):
        return correct / (correct + fp.sum(axis=1))


def macro_f1_statistic(sums: np.ndarray) -> np.ndarray:
    """Macro F1: the unweighted mean of the per-class F1 over all classes."""
    return _f1(*_confusion_columns(sums)).mean(axis=1)


def binary_f1_statistic(positive: int = 1) -> SumsStatistic:
    """``fn(sums) ->`` F1 of class ``positive`` (binary F1 with two classes)."""
    return lambda sums: _f1(*(part[:, positive] for part in _confusion_columns(sums)))
