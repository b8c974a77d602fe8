"""Binary image-text matching: accuracy, precision, recall and F1 at a threshold, and AUROC.

AUROC is the Mann-Whitney statistic with tied scores counted one half (equal to scikit-learn's
``roc_auc_score``); it is undefined with a single class and then left out with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.metrics.base import MetricResult, register_metric
from tasks.stats.estimates import Estimate, mean


@dataclass
class MatchingInputs:
    ids: list[str]
    labels: np.ndarray  # 1 = the text matches the image, 0 = it does not
    scores: np.ndarray  # higher = more likely a match
    threshold: float

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if not (len(self.ids) == len(self.labels) == len(self.scores)):
            raise ValueError("ids, labels and scores must have the same length")
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError("labels must be 0 or 1")
        if not np.isfinite(self.scores).all():
            raise ValueError("scores contain NaN or infinite values")


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positives, negatives]))  # average ranks for ties
    u = ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(positives) * len(negatives)))


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold (predict match when score >= t) with the highest accuracy; the smallest such
    threshold among midpoints between consecutive distinct scores."""
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2,
                                 [values[-1] + 1.0]]) if len(values) else np.array([0.0])
    accuracy = [(np.where(scores >= t, 1, 0) == labels).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


@register_metric("matching", task="matching", outputs={
    "accuracy": True, "precision": True, "recall": True, "f1": True, "auroc": True,
})
def matching(inputs: MatchingInputs) -> MetricResult:
    """Accuracy / precision / recall / F1 at the threshold, AUROC over all thresholds."""
    predicted = (inputs.scores >= inputs.threshold).astype(np.int64)
    labels = inputs.labels
    tp = int(((predicted == 1) & (labels == 1)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    corpus = {"accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
              "precision": precision, "recall": recall,
              "f1": _ratio(2 * tp, 2 * tp + fp + fn), "threshold": float(inputs.threshold)}
    warnings = []
    area = auroc(labels, inputs.scores)
    if area is None:
        warnings.append("AUROC needs both matching and non-matching pairs; left out")
    else:
        corpus["auroc"] = area
    return MetricResult(corpus=corpus,
                        per_sample={"correct": (predicted == labels).astype(np.float64),
                                    "predicted_match": predicted.astype(np.float64)},
                        extra={"warnings": warnings}, estimates=MATCHING_ESTIMATES)


def _binary(measure: str) -> Estimate:
    return Estimate("confusion", ("label", "predicted_match"),
                    {"classes": ["0", "1"], "measure": measure, "average": "binary",
                     "positive": 1})


# The threshold is chosen once (on the calibration share) and held fixed when resampling; the
# per-pair table holds the model's ``score`` and the 0/1 ``label``.
MATCHING_ESTIMATES = {
    "accuracy": mean("correct"), "precision": _binary("precision"),
    "recall": _binary("recall"), "f1": _binary("f1"),
    "auroc": Estimate("auroc", ("score", "label")),
}
