"""Captioning scoring: the generated captions against the references with the coco-caption
metrics (and CLIPScore / semantic similarity where configured)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.config import EvalConfig
from tasks.data.base import DatasetRef
from tasks.kinds.base import InferenceRef, Scores
from tasks.kinds.scoring import (
    generated_ok,
    per_item_table,
    score_metrics,
    with_intervals,
    write_per_sample,
)
from tasks.kinds.sharded import load_texts
from tasks.metrics.captioning import CaptionInputs

# Lower is worse for every caption metric; the review sample starts from the lowest of these.
REVIEW_PREFERENCE = ("cider", "bleu_4", "rouge_l", "meteor", "clip_score")


def score(dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, out: Path) -> Scores:
    items = dataset.load_items()
    predictions = load_texts(inference, "captions")
    ok = generated_ok(predictions, inference.failures)
    kept = items[ok]
    inputs = CaptionInputs(ids=list(kept["item_id"]),
                           predictions=[str(predictions[i]) for i in np.flatnonzero(ok)],
                           references=[list(c) for c in kept["captions"]],
                           image_paths=list(kept["image_path"]))
    run = score_metrics("captioning", inputs, config)

    table = per_item_table(items, ok, inference.failures, run.per_sample, predictions)
    review = next((c for c in REVIEW_PREFERENCE if c in run.per_sample),
                  next(iter(run.per_sample), "status"))
    return Scores(
        metrics=with_intervals(run, table, config), higher_is_better=run.higher_is_better,
        estimates=run.estimates, per_sample_path=write_per_sample(table, out),
        review_column=review,
        review_worst_is_high=False, skipped=run.skipped, warnings=run.warnings,
        counts={"images_scored": int(ok.sum()), "failed": int((~ok).sum())},
    )

