"""Recall@k curves for the report: recall at every k = 1..K in both directions, from the
per-image ranks of the per-sample table, with bootstrap intervals over images.

Images are the unit of resampling in both directions, as for the run's own retrieval metrics
(``tasks.metrics.retrieval.retrieval_estimates``): image-to-text recall is the mean of per-image
hits, text-to-image recall the ratio of the hits among the images' captions to their captions.
Each curve is one pass of the seeded resampling stream (``tasks.stats.resampling``): all k are
computed from the same resamples, and the interval at a k equals the one the run logged for
``<direction>_recall_at_<k>`` under the same settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from tasks.stats.bootstrap import BootstrapSettings, Interval, make_interval, no_interval
from tasks.stats.resampling import resample, resampled_sums

MIN_K = 10  # a curve reaches at least this k, when the gallery is that large


@dataclass(frozen=True)
class RecallCurve:
    """Recall at k = 1..len(values) of one direction, with its interval bounds (NaN where
    undefined) and how many images / texts it is over."""

    direction: str  # "i2t" or "t2i"
    values: np.ndarray
    low: np.ndarray
    high: np.ndarray
    queries: int  # images (i2t) or texts (t2i) that were ranked
    gallery: int  # candidates per query: texts (i2t) or images (t2i)

    @property
    def ks(self) -> np.ndarray:
        return np.arange(1, len(self.values) + 1)


def settings_of(report: dict[str, Any]) -> BootstrapSettings:
    """The run's bootstrap settings, from report.json's ``statistics``."""
    stats = report.get("statistics") or {}
    return BootstrapSettings(int(stats.get("bootstrap", 1000)), float(stats.get("level", 0.95)),
                             stats.get("method", "percentile"), int(stats.get("seed", 0)))


def largest_k(metrics: dict[str, float]) -> int:
    """The largest k among the run's ``*_recall_at_<k>`` metrics (0 without any)."""
    ks = [int(m.group(1)) for key in metrics
          if (m := re.fullmatch(r"(?:i2t|t2i)_recall_at_(\d+)", key))]
    return max(ks, default=0)


def recall_curves(per_sample: pd.DataFrame, settings: BootstrapSettings, max_k: int
                  ) -> list[RecallCurve]:
    """Both directions' curves up to ``max(max_k, MIN_K)`` (bounded by the gallery) over the
    scored images; none without scored images with captions."""
    scored = per_sample[per_sample["status"] == "scored"] if "status" in per_sample \
        else per_sample
    lists = [np.asarray(ranks, dtype=np.int64) for ranks in scored["t2i_ranks"]]
    texts = np.array([len(r) for r in lists], dtype=np.float64)
    i2t = scored["i2t_rank"].to_numpy(np.int64)
    if not len(lists) or texts.sum() == 0:
        return []
    want = max(max_k, MIN_K)
    i2t_k, t2i_k = min(want, int(texts.sum())), min(want, len(lists))
    with_text = i2t > 0
    i2t_hits = i2t[with_text, None] <= np.arange(1, i2t_k + 1)[None, :]
    t2i_hits = cumulative_hits(lists, t2i_k)
    return [
        _curve("i2t", i2t_hits, np.ones(int(with_text.sum())), int(texts.sum()), settings),
        _curve("t2i", t2i_hits, texts, len(lists), settings),
    ]


def cumulative_hits(ranks: list[np.ndarray], max_k: int) -> np.ndarray:
    """``(len(ranks), max_k)``: per list, how many of its 1-based ranks are <= k, for every k
    (rank 0, not ranked, counts nowhere)."""
    owner = np.repeat(np.arange(len(ranks)), [len(r) for r in ranks])
    flat = np.concatenate(ranks) if ranks else np.empty(0, np.int64)
    kept = (flat >= 1) & (flat <= max_k)
    cells = np.bincount(owner[kept] * max_k + flat[kept] - 1, minlength=len(ranks) * max_k)
    return np.cumsum(cells.reshape(len(ranks), max_k), axis=1)


def _curve(direction: str, hits: np.ndarray, units: np.ndarray, gallery: int,
           settings: BootstrapSettings) -> RecallCurve:
    """Recall = sum of hits / sum of units at every k (one column per k), resampling rows."""
    stats = np.column_stack([hits.astype(np.float64), units])
    total = stats.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = total[:-1] / total[-1]
    bounds = _intervals(stats, values, settings)
    return RecallCurve(direction, values, np.array([b.low for b in bounds]),
                       np.array([b.high for b in bounds]), int(units.sum()), gallery)


def _intervals(stats: np.ndarray, values: np.ndarray, settings: BootstrapSettings
               ) -> list[Interval]:
    """One interval per k from a single resampling pass (the run's seed and settings)."""
    n = len(stats)
    if n < 2 or settings.resamples == 0:
        return [no_interval(float(v)) for v in values]
    sums = resample(n, resampled_sums(stats), settings.resamples, settings.seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = sums[:, :-1] / sums[:, -1:]
    total = stats.sum(axis=0)
    return [make_interval(boot[:, k], float(values[k]), settings,
                          partial(_leave_one_out, stats, total, k))
            for k in range(len(values))]


def _leave_one_out(stats: np.ndarray, total: np.ndarray, k: int) -> np.ndarray:
    """Jackknife values of the recall at column ``k`` (for BCa)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total[k] - stats[:, k]) / (total[-1] - stats[:, -1])
