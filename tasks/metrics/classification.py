"""Classification metrics (accuracy, top-5, precision/recall/F1, confusion matrix) in numpy.

Values equal scikit-learn's with ``labels=<class set>`` and ``zero_division=0`` (the tests check
this; scikit-learn itself is a test-only dependency). Conventions:

* The class set is ``class_names`` when given, else the sorted union of labels and predictions.
* Macro averages run over the whole class set, so a class in ``class_names`` that never occurs
  in ``labels`` contributes precision/recall/F1 = 0 (noted in ``extra["notes"]``). Weighted
  averages use the label counts (support) as weights, so such classes weigh nothing there.
* F1 is ``2·tp / (support + predicted)`` (0 when both are 0), scikit-learn's formula.
* ``top5_accuracy`` needs ``scores`` and more than 5 classes: with 5 or fewer it would be a
  trivial 1.0, so it is left out with a note. Tied scores rank the higher class index first,
  as scikit-learn's ``top_k_accuracy_score`` (stable sort, reversed) does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.metrics.base import MetricResult, register_metric, safe_key_part
from tasks.stats.estimates import Estimate, mean

TOP_K = 5



@dataclass
class ClassificationInputs:
    """Labels and predicted class names per sample; ``scores`` (n × C) follow ``class_names``."""

    ids: list[str]
    labels: list[str]
    predictions: list[str]
    scores: np.ndarray | None = None
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("labels", "predictions"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"ClassificationInputs: {name} has {len(getattr(self, name))} entries, "
                    f"ids has {n}"
                )
        seen: set[str] = set()
        for sid in self.ids:
            if sid in seen:
                raise ValueError(f"ClassificationInputs: duplicate id {sid!r}")
            seen.add(sid)
        if self.class_names is not None:
            self._check_class_names(self.class_names)
        if self.scores is not None:
            self.scores = self._checked_scores(self.scores)
        self._check_key_collisions()

    def _check_class_names(self, class_names: list[str]) -> None:
        if len(set(class_names)) != len(class_names):
            raise ValueError("ClassificationInputs: class_names has duplicates")
        known = set(class_names)
        for sid, label, prediction in zip(self.ids, self.labels, self.predictions, strict=True):
            for kind, value in (("label", label), ("prediction", prediction)):
                if value not in known:
                    raise ValueError(
                        f"ClassificationInputs: sample {sid!r}: {kind} {value!r} "
                        "is not in class_names"
                    )

    def _checked_scores(self, scores: Any) -> np.ndarray:
        if self.class_names is None:
            raise ValueError("ClassificationInputs: scores need class_names (their column order)")
        array = np.asarray(scores, dtype=np.float64)
        expected = (len(self.ids), len(self.class_names))
        if array.shape != expected:
            raise ValueError(
                f"ClassificationInputs: scores has shape {array.shape}, expected "
                f"(n_samples, n_classes) = {expected}"
            )
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            sid = self.ids[int(np.argmax(bad))]
            raise ValueError(f"ClassificationInputs: sample {sid!r} has non-finite scores")
        return array

    def _check_key_collisions(self) -> None:
        seen: dict[str, str] = {}
        for name in self.classes():
            key = safe_key_part(name)
            if key in seen:
                raise ValueError(
                    f"ClassificationInputs: classes {seen[key]!r} and {name!r} "
                    f"both map to metric key 'recall.{key}'"
                )
            seen[key] = name

    def classes(self) -> list[str]:
        """The class set: ``class_names``, else the sorted union of labels and predictions."""
        if self.class_names is not None:
            return list(self.class_names)
        return sorted(set(self.labels) | set(self.predictions))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class (scikit-learn's layout)."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise division giving 0 where the denominator is 0 (``zero_division=0``)."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support for every class of a confusion matrix."""
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    return {
        "precision": _divide(tp, predicted.astype(np.float64)),
        "recall": _divide(tp, support.astype(np.float64)),
        "f1": _divide(2 * tp, (support + predicted).astype(np.float64)),
        "support": support,
    }


def top_k_hits(scores: np.ndarray, y_true: np.ndarray, k: int) -> np.ndarray:
    """Whether the true class is among the ``k`` best scores of each row.

    Rank of the true class = #classes scoring higher + #classes tying with a higher index,
    which reproduces scikit-learn's tie order.
    """
    true_scores = scores[np.arange(len(y_true)), y_true][:, None]
    higher_index = np.arange(scores.shape[1])[None, :] > y_true[:, None]
    rank = (scores > true_scores).sum(axis=1) + ((scores == true_scores) & higher_index).sum(axis=1)
    return rank < k


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sum(values * weights) / np.sum(weights))


@register_metric(
    "classification",
    task="classification",
    outputs={
        "accuracy": True,
        "top5_accuracy": True,
        "macro_f1": True,
        "weighted_f1": True,
        "macro_precision": True,
        "weighted_precision": True,
        "macro_recall": True,
    },
)
def classification(inputs: ClassificationInputs) -> MetricResult:
    """Accuracy, top-5 accuracy, macro/weighted precision and F1, recall per class.

    Corpus also holds ``recall.<class>`` per class (MLflow-safe names, see ``safe_key_part``);
    ``extra`` holds the confusion matrix, per-class scores under the original names, and notes.
    """
    if not inputs.ids:
        return MetricResult.skip("no samples")
    classes = inputs.classes()
    index = {name: i for i, name in enumerate(classes)}
    y_true = np.array([index[label] for label in inputs.labels], dtype=np.intp)
    y_pred = np.array([index[prediction] for prediction in inputs.predictions], dtype=np.intp)
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    scores = per_class_scores(matrix)
    correct = (y_true == y_pred).astype(np.float64)

    corpus = {
        "accuracy": float(correct.mean()),
        "macro_f1": float(scores["f1"].mean()),
        "weighted_f1": _weighted(scores["f1"], scores["support"]),
        "macro_precision": float(scores["precision"].mean()),
        "weighted_precision": _weighted(scores["precision"], scores["support"]),
        "macro_recall": float(scores["recall"].mean()),
    }
    corpus.update(
        {
            f"recall.{safe_key_part(c)}": float(r)
            for c, r in zip(classes, scores["recall"], strict=True)
        }
    )
    per_sample = {"correct": correct}
    notes: list[str] = []
    if inputs.scores is not None:
        if len(classes) > TOP_K:
            hits = top_k_hits(inputs.scores, y_true, TOP_K).astype(np.float64)
            corpus["top5_accuracy"] = float(hits.mean())
            per_sample["top5_correct"] = hits
        else:
            notes.append(f"top5_accuracy skipped: {len(classes)} classes, needs more than {TOP_K}")
    absent = [c for c, s in zip(classes, scores["support"], strict=True) if s == 0]
    if absent:
        notes.append(f"classes without labelled samples count as 0 in macro averages: {absent}")

    extra: dict[str, Any] = {
        "confusion_matrix": {"labels": classes, "matrix": matrix.tolist()},
        "per_class": {
            c: {name: values[i].item() for name, values in scores.items()}
            for i, c in enumerate(classes)
        },
    }
    if notes:
        extra["notes"] = notes
    return MetricResult(corpus=corpus, per_sample=per_sample, extra=extra,
                        estimates=classification_estimates(corpus, classes))


def classification_estimates(corpus: dict[str, float], classes: list[str]
                             ) -> dict[str, Estimate]:
    """Accuracies are means of hits; precision / recall / F1 come from the per-item
    ``label`` / ``prediction`` columns; a class's recall is the accuracy on its items."""

    def confusion(measure: str, average: str) -> Estimate:
        return Estimate("confusion", ("label", "prediction"),
                        {"classes": classes, "measure": measure, "average": average})

    estimates = {"accuracy": mean("correct"), "top5_accuracy": mean("top5_correct")}
    for key in corpus:
        average, _, measure = key.partition("_")
        if average in ("macro", "weighted") and measure in ("f1", "precision", "recall"):
            estimates[key] = confusion(measure, average)
    for name in classes:
        estimates[f"recall.{safe_key_part(name)}"] = mean("correct", where=("label", name))
    return {k: v for k, v in estimates.items() if k in corpus}
