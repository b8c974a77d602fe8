"""VQA scoring: the official VQA accuracy (per answer, min(#other humans that gave it / 3, 1),
averaged over leaving each human out) overall and per question / answer type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

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
from tasks.metrics.vqa import VQAInputs


def _column(items: pd.DataFrame, name: str | None) -> list[str | None] | None:
    if not name or name not in items.columns:
        return None
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            for v in items[name]]


def score(dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, out: Path) -> Scores:
    items = dataset.load_items()
    answers = load_texts(inference, "captions")
    ok = generated_ok(answers, inference.failures)
    kept = items[ok]
    question_types = _column(kept, config.vqa.question_type_column)
    answer_types = _column(kept, config.vqa.answer_type_column)
    inputs = VQAInputs(ids=list(kept["item_id"]),
                       predictions=[str(answers[i]) for i in np.flatnonzero(ok)],
                       answers=[list(c) for c in kept["captions"]],
                       question_types=question_types, answer_types=answer_types)
    run = score_metrics("vqa", inputs, config)

    table = per_item_table(items, ok, inference.failures, run.per_sample, answers)
    # the metric's per-type estimates read "question_type" / "answer_type" columns
    for name, column in (("question_type", config.vqa.question_type_column),
                         ("answer_type", config.vqa.answer_type_column)):
        if column and column in items.columns and column != name:
            table[name] = _column(items, column)
    return Scores(
        metrics=with_intervals(run, table, config), higher_is_better=run.higher_is_better,
        estimates=run.estimates, per_sample_path=write_per_sample(table, out),
        review_column="vqa_accuracy",
        review_worst_is_high=False, skipped=run.skipped, warnings=run.warnings,
        counts={"questions_scored": int(ok.sum()), "failed": int((~ok).sum())},
    )

