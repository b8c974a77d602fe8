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
* METEOR 1.5 (:func:`meteor_sufficient_statistics` of the jar's ``SCORE`` answers), ``k = 24``:
  see :func:`meteor_statistic`.
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


# ---- METEOR 1.5 ---------------------------------------------------------------------------

# Task "rank" (the jar's default task) parameters for English, as ``java -jar meteor-1.5.jar
# - - -stdio -l en -norm`` loads them (``Constants.PARAM_RANK`` / ``WEIGHT_RANK``, read back
# from a ``MeteorScorer`` built from those arguments): alpha, beta, gamma, delta and the
# weights of the exact / stem / synonym / paraphrase modules.
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA = 0.85, 0.2, 0.6, 0.75
METEOR_MODULES = ("exact", "stem", "synonym", "paraphrase")
METEOR_WEIGHTS = (1.0, 0.6, 0.8, 0.6)
METEOR_JAR_STATS = 23  # numbers on one answer to a ``SCORE`` line (``MeteorStats.toString``)
METEOR_STATS = METEOR_JAR_STATS + 1  # ... plus the perfect-match flag

_M_CHUNKS, _M_TEST_WORDS, _M_REF_WORDS, _M_PERFECT = 20, 21, 22, 23


def _meteor_stage_columns(side: int) -> list[int]:
    """Columns of the stage matches of the test (``side`` 0) or the reference (1): content
    matches of every module, then function-word matches of every module."""
    modules = range(len(METEOR_MODULES))
    return [4 + 4 * m + side for m in modules] + [4 + 4 * m + 2 + side for m in modules]


def meteor_sufficient_statistics(jar_stats: ArrayLike) -> np.ndarray:
    """Per-sample METEOR statistics ``(n, 24)``: the jar's 23 numbers per sample (the parsed
    answers to ``SCORE`` lines, as they came) and a 0/1 perfect-match flag (column 23).

    METEOR leaves the chunk of a perfect match (every word of the prediction and of the
    reference matched, in one chunk) out of the corpus chunk count (``MeteorStats.addStats``);
    the flag makes that count a column sum: ``sum(chunks) - sum(perfect)``."""
    stats = np.asarray(jar_stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[1] != METEOR_JAR_STATS:
        raise ValueError(f"METEOR statistics need {METEOR_JAR_STATS} columns per sample, "
                         f"got shape {stats.shape}")
    perfect = ((stats[:, _meteor_stage_columns(0)].sum(axis=1) == stats[:, 0])
               & (stats[:, _meteor_stage_columns(1)].sum(axis=1) == stats[:, 1])
               & (stats[:, _M_CHUNKS] == 1))
    return np.column_stack([stats, perfect.astype(np.float64)])


def meteor_statistic(
    alpha: float = METEOR_ALPHA,
    beta: float = METEOR_BETA,
    gamma: float = METEOR_GAMMA,
    delta: float = METEOR_DELTA,
    weights: tuple[float, ...] = METEOR_WEIGHTS,
) -> SumsStatistic:
    """``fn(sums (b, 24)) ->`` METEOR 1.5's corpus score (``EVAL``'s last answer) per row.

    Defaults are the jar's English parameters for ``-l en -norm`` (task "rank", the default):
    alpha 0.85, beta 0.2, gamma 0.6, delta 0.75, module weights exact 1.0, stem 0.6,
    synonym 0.8, paraphrase 0.6.

    Layout of a row (:func:`meteor_sufficient_statistics`; columns 0-22 are the jar's
    ``MeteorStats.toString()``): 0 test length, 1 reference length, 2 test function words,
    3 reference function words; for each module ``m`` in exact, stem, synonym, paraphrase,
    columns ``4 + 4m ..`` hold test content matches, reference content matches, test function
    matches, reference function matches; 20 chunks, 21 test word matches, 22 reference word
    matches; 23 perfect-match flag.

    On the sums, as ``MeteorScorer.computeMetrics`` (the jar sums the samples' statistics with
    ``MeteorStats.addStats``, which skips the chunk of a perfect match)::

        test_len_w  = delta (test_len - test_fn) + (1 - delta) test_fn      (same for ref)
        test_match_w = sum_m w_m delta test_content_m + sum_m w_m (1 - delta) test_function_m
        P = test_match_w / test_len_w            R = ref_match_w / ref_len_w
        fmean = 1 / ((1 - alpha) / P + alpha / R)
        chunks = sum(chunks) - sum(perfect)
        frag = 0 if all test and all reference words matched and chunks == 1
               else chunks / ((test_word_matches + ref_word_matches) / 2)
        score = fmean (1 - gamma frag ** beta), 0 where that is NaN, else max(score, 0)

    A single row (unsummed) gives that sample's own METEOR (``EVAL``'s per-sample answers).
    """
    if len(weights) != len(METEOR_MODULES):
        raise ValueError(f"METEOR needs {len(METEOR_MODULES)} module weights, got {weights}")
    test_stages, ref_stages = _meteor_stage_columns(0), _meteor_stage_columns(1)
    modules = len(METEOR_MODULES)

    def weighted(sums: np.ndarray, columns: list[int]) -> np.ndarray:
        # the jar's order: content matches of every module, then function-word matches
        total = np.zeros(sums.shape[0])
        for m, column in enumerate(columns[:modules]):
            total = total + sums[:, column] * weights[m] * delta
        for m, column in enumerate(columns[modules:]):
            total = total + sums[:, column] * weights[m] * (1 - delta)
        return total

    def statistic(sums: np.ndarray) -> np.ndarray:
        sums = np.asarray(sums, dtype=np.float64)
        if sums.ndim != 2 or sums.shape[1] != METEOR_STATS:
            raise ValueError(f"METEOR sums need {METEOR_STATS} columns, got shape {sums.shape}")
        test_len, ref_len, test_fn, ref_fn = (sums[:, j] for j in range(4))
        test_len_w = delta * (test_len - test_fn) + (1 - delta) * test_fn
        ref_len_w = delta * (ref_len - ref_fn) + (1 - delta) * ref_fn
        chunks = sums[:, _M_CHUNKS] - sums[:, _M_PERFECT]
        all_matched = ((sums[:, test_stages].sum(axis=1) == test_len)
                       & (sums[:, ref_stages].sum(axis=1) == ref_len) & (chunks == 1))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            precision = weighted(sums, test_stages) / test_len_w
            recall = weighted(sums, ref_stages) / ref_len_w
            fmean = 1 / ((1 - alpha) / precision + alpha / recall)
            frag = np.where(all_matched, 0.0, chunks / (
                (sums[:, _M_TEST_WORDS] + sums[:, _M_REF_WORDS]) / 2))
            score = fmean * (1 - gamma * frag**beta)
        return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))

    return statistic
