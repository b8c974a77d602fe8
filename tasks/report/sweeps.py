"""What the matching plots show, computed from the scored pairs: accuracy / precision / recall
over a sweep of thresholds, and the calibration of the scores (fraction of matching pairs per
score bin). A pair is predicted to match when ``score >= threshold``, as in scoring."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_THRESHOLDS = 200  # points of a sweep: the scores' quantiles beyond this many pairs


@dataclass(frozen=True)
class Sweep:
    """Accuracy, precision and recall at each threshold (NaN where undefined: precision
    without predicted matches, recall without matching pairs)."""

    thresholds: np.ndarray
    accuracy: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


@dataclass(frozen=True)
class Calibration:
    """Per non-empty score bin: the mean score, the fraction of matching pairs and the pairs."""

    mean_score: np.ndarray
    positive_rate: np.ndarray
    pairs: np.ndarray
    edges: np.ndarray


def sweep_points(scores: np.ndarray, extra: float | None = None) -> np.ndarray:
    """Sorted thresholds: every distinct score (its quantiles when there are more than
    ``MAX_THRESHOLDS``) plus ``extra`` (the chosen threshold)."""
    points = np.unique(scores)
    if len(points) > MAX_THRESHOLDS:
        points = np.unique(np.quantile(scores, np.linspace(0, 1, MAX_THRESHOLDS)))
    if extra is not None and np.isfinite(extra):
        points = np.union1d(points, [extra])
    return points


def threshold_sweep(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> Sweep:
    """Accuracy, precision and recall of ``score >= t`` against ``labels`` for every t."""
    predicted = scores[None, :] >= thresholds[:, None]
    truth = labels.astype(bool)[None, :]
    tp = (predicted & truth).sum(axis=1).astype(np.float64)
    accuracy = (predicted == truth).mean(axis=1) if len(scores) else np.full(len(thresholds),
                                                                             np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / predicted.sum(axis=1)
        recall = tp / truth.sum()
    return Sweep(thresholds, accuracy, precision, np.broadcast_to(recall, tp.shape).copy())


def calibration_bins(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> Calibration:
    """Equal-width bins over the scores' range; empty bins left out."""
    low, high = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    pairs = np.bincount(index, minlength=bins)
    totals = np.bincount(index, weights=scores, minlength=bins)
    positives = np.bincount(index, weights=labels.astype(np.float64), minlength=bins)
    used = pairs > 0
    return Calibration(totals[used] / pairs[used], positives[used] / pairs[used], pairs[used],
                       edges)
