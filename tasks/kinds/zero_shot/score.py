"""Zero-shot scoring: the image is assigned the class of highest cosine similarity (rounded to
``tasks.metrics.ranking.SCORE_DECIMALS`` decimals, ties to the first class); accuracy,
F1 and the confusion matrix against the labels. The per-sample ``margin`` is the cosine
similarity of the best class minus that of the second best (the review's ``margin`` strategy
samples the smallest): similarities, not probabilities, since a softmax needs the model's logit
scale, which inference does not keep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.arrays import l2_normalize
from tasks.config import EvalConfig
from tasks.data.base import DatasetRef
from tasks.kinds.base import InferenceRef, Scores
from tasks.kinds.scoring import (
    metric_columns,
    ok_mask,
    per_item_table,
    score_metrics,
    with_intervals,
    write_per_sample,
)
from tasks.kinds.sharded import load_arrays
from tasks.metrics.classification import ClassificationInputs
from tasks.metrics.ranking import rounded_scores


def score(dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, out: Path) -> Scores:
    items = dataset.load_items()
    names = inference.class_names
    images = load_arrays(inference, "image_embeddings")
    classes = np.load(str(inference.class_embeddings_path))
    failures = _label_failures(items["label"], set(names), dict(inference.failures))
    ok = ok_mask(len(items), failures)
    sims = l2_normalize(images[ok]) @ classes.T
    # arg-max on the ranking grid (tasks.metrics.ranking): near-ties go to the first class
    predicted = [names[i] for i in rounded_scores(sims).argmax(axis=1)]
    kept = items[ok]
    inputs = ClassificationInputs(ids=list(kept["item_id"]), labels=list(kept["label"]),
                                  predictions=predicted, scores=sims, class_names=names)
    run = score_metrics("classification", inputs, config)

    full = iter(predicted)
    table = per_item_table(items, ok, failures, run.per_sample,
                           [next(full) if k else None for k in ok])
    table = metric_columns(table, ok, {"margin": top_two_margin(sims)})
    out.mkdir(parents=True, exist_ok=True)
    files = _confusion_matrix_file(run.extra.get("classification", {}), out)
    review = "correct" if "correct" in run.per_sample else "status"
    return Scores(
        metrics=with_intervals(run, table, config), higher_is_better=run.higher_is_better,
        estimates=run.estimates, per_sample_path=write_per_sample(table, out),
        review_column=review,
        review_worst_is_high=False, skipped=run.skipped, warnings=run.warnings, files=files,
        counts={"images_scored": int(ok.sum()), "failed": int((~ok).sum()),
                "classes": len(names)},
    )


def top_two_margin(sims: np.ndarray) -> np.ndarray:
    """Per row, the best value minus the second best; NaN with fewer than two columns."""
    if sims.shape[1] < 2:
        return np.full(len(sims), np.nan)
    top_two = np.partition(sims, -2, axis=1)[:, -2:]
    return (top_two[:, 1] - top_two[:, 0]).astype(np.float64)


def _label_failures(labels: pd.Series, known: set[str], failures: dict[int, str]
                    ) -> dict[int, str]:
    """Inference failures plus items without a usable label."""
    for row, label in enumerate(labels):
        if row in failures:
            continue
        if label is None or pd.isna(label):
            failures[row] = "no label"
        elif label not in known:
            failures[row] = f"label {label!r} is not among the class names"
    return failures


def _confusion_matrix_file(extra: dict[str, Any], out: Path) -> dict[str, str]:
    matrix = extra.get("confusion_matrix")
    if not matrix:
        return {}
    frame = pd.DataFrame(matrix["matrix"], index=matrix["labels"], columns=matrix["labels"])
    frame.index.name = "label \\ predicted"
    path = out / "confusion_matrix.csv"
    frame.to_csv(path)
    return {"confusion_matrix.csv": str(path)}

