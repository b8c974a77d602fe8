"""BLEU-1..4 exactly as coco-caption's ``Bleu(4).compute_score`` (``BleuScorer``, "closest").

Per sample and for the corpus, coco-caption computes

    bleu_n = (prod_{k<=n} (correct_k + 1e-15) / (guess_k + 1e-9)) ** (1 / n)

times ``exp(1 - 1 / ratio)`` when ``ratio = (testlen + 1e-15) / (reflen + 1e-9) < 1``, with
clipped n-gram matches ``correct_k`` (each n-gram counted at most as often as in the reference
that has most of it), ``guess_k = max(0, testlen - k + 1)`` and, as effective reference length,
the reference length closest to the hypothesis length (the shorter one on ties). The corpus
value uses the sums of ``correct``, ``guess``, ``testlen`` and ``reflen`` over all samples.
Words come from ``str.split()`` of the tokenised captions, as in coco-caption.
"""

from __future__ import annotations

import numpy as np

from tasks.metrics.base import MetricResult, register_metric
from tasks.metrics.captioning.inputs import (
    CaptionInputs,
    NgramCounts,
    NgramTables,
    require_samples,
)
from tasks.stats.estimates import Estimate

MAX_N = 4
_SMALL = 1e-9
_TINY = 1e-15


def closest_ref_lengths(tables: NgramTables) -> np.ndarray:
    """Per sample, the reference length closest to the prediction length (shortest on ties)."""
    distance = np.abs(tables.ref_length - tables.pred_length[tables.ref_sample])
    # Sort by (sample, distance, length): the first row of every sample is the one to take.
    order = np.lexsort((tables.ref_length, distance, tables.ref_sample))
    first = np.ones(len(order), dtype=bool)
    first[1:] = tables.ref_sample[order][1:] != tables.ref_sample[order][:-1]
    return tables.ref_length[order][first]


def clipped_matches(counts: NgramCounts, n_samples: int) -> np.ndarray:
    """Per sample: sum over its prediction's n-grams of min(count, max count in one reference)."""
    keys = counts.image_key
    if len(keys) == 0 or len(counts.pred_gram) == 0:
        return np.zeros(n_samples, dtype=np.int64)
    pred_keys = counts.pred_sample * counts.n_grams + counts.pred_gram
    where = np.minimum(np.searchsorted(keys, pred_keys), len(keys) - 1)
    clipped = np.where(keys[where] == pred_keys,
                       np.minimum(counts.pred_count, counts.image_max_count[where]), 0)
    return np.bincount(counts.pred_sample, weights=clipped, minlength=n_samples).astype(np.int64)


def _bleu_from_counts(
    correct: np.ndarray, guess: np.ndarray, testlen: np.ndarray, reflen: np.ndarray
) -> np.ndarray:
    """BLEU-1..n (last axis) from match counts, with coco-caption's smoothing and brevity
    penalty; works on one row (corpus) or one row per sample."""
    precisions = (correct.astype(np.float64) + _TINY) / (guess.astype(np.float64) + _SMALL)
    products = np.cumprod(precisions, axis=-1)
    scores = products ** (1.0 / np.arange(1, correct.shape[-1] + 1))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return scores * penalty[..., None]


def bleu_scores(inputs: CaptionInputs, n: int = MAX_N) -> tuple[np.ndarray, np.ndarray]:
    """(corpus BLEU-1..n, per-sample BLEU-1..n of shape (samples, n))."""
    if not 1 <= n <= MAX_N:
        raise ValueError(f"BLEU order must be between 1 and {MAX_N}, got {n}")
    require_samples(inputs, "BLEU")
    tables = inputs.ngrams()
    n_samples = len(inputs)
    correct = np.stack(
        [clipped_matches(tables.orders[k], n_samples) for k in range(n)], axis=1
    )
    testlen = tables.pred_length
    guess = np.maximum(0, testlen[:, None] - np.arange(n)[None, :])
    reflen = closest_ref_lengths(tables)
    per_sample = _bleu_from_counts(correct, guess, testlen.astype(np.float64),
                                   reflen.astype(np.float64))
    corpus = _bleu_from_counts(correct.sum(axis=0), guess.sum(axis=0),
                               np.asarray(testlen.sum(), np.float64),
                               np.asarray(reflen.sum(), np.float64))
    return corpus, per_sample


@register_metric(
    "bleu",
    task="captioning",
    outputs={f"bleu_{k}": True for k in range(1, MAX_N + 1)},
    description="BLEU-1..4 as coco-caption (PTB tokenisation, closest reference length)",
)
def bleu_score(inputs: CaptionInputs) -> MetricResult:
    """BLEU-1..4 as coco-caption (PTB tokenisation, closest reference length)."""
    corpus, per_sample = bleu_scores(inputs)
    keys = [f"bleu_{k}" for k in range(1, MAX_N + 1)]
    stats = bleu_sufficient_statistics(inputs)
    columns = tuple(f"bleu.stat.{j}" for j in range(stats.shape[1]))
    return MetricResult(
        corpus={key: float(corpus[k]) for k, key in enumerate(keys)},
        per_sample={key: per_sample[:, k] for k, key in enumerate(keys)}
        | {column: stats[:, j].astype(np.float64) for j, column in enumerate(columns)},
        # corpus BLEU is a function of the summed statistics, not a mean of sample BLEUs
        estimates={key: Estimate("bleu", columns, {"order": k + 1})
                   for k, key in enumerate(keys)},
    )


def bleu_sufficient_statistics(inputs: CaptionInputs, n: int = MAX_N) -> np.ndarray:
    """Per-sample BLEU sufficient statistics, int64 ``(samples, 2n + 2)``: clipped matches
    ``correct_1..n``, n-gram totals ``guess_1..n``, prediction length and closest reference
    length, from the shared n-gram tables (nothing is re-tokenised). Any corpus BLEU-m
    (``m <= n``) is a function of their column sums (``tasks.stats.corpus.bleu_statistic``);
    the sums over all samples give exactly ``bleu_scores(inputs)[0]``."""
    if not 1 <= n <= MAX_N:
        raise ValueError(f"BLEU order must be between 1 and {MAX_N}, got {n}")
    require_samples(inputs, "BLEU")
    tables = inputs.ngrams()
    correct = np.stack([clipped_matches(tables.orders[k], len(inputs)) for k in range(n)], axis=1)
    testlen = tables.pred_length
    guess = np.maximum(0, testlen[:, None] - np.arange(n)[None, :])
    reflen = closest_ref_lengths(tables)
    return np.column_stack([correct, guess, testlen, reflen]).astype(np.int64)
