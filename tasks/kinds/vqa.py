"""Visual question answering: one question per item, generated answers scored with the official
VQA accuracy against the human answers (the item's caption column holds the answers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import EvalConfig
from tasks.data.base import DatasetRef
from tasks.inference import InferenceRef, run_sharded
from tasks.kinds.base import (
    Scores,
    TaskKindSpec,
    per_item_table,
    register_task_kind,
    run_metrics,
    write_per_sample,
)
from tasks.kinds.captioning import generation_settings, load_predictions
from tasks.metrics.vqa import VQAInputs
from tasks.models import fingerprint_model, load_adapter
from tasks.tracking.cache import FolderCache


def _column(items: pd.DataFrame, name: str | None) -> list[str | None] | None:
    if not name or name not in items.columns:
        return None
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            for v in items[name]]


def infer(dataset: DatasetRef, config: EvalConfig, cache_root: Path, progress=None) -> InferenceRef:
    items = dataset.load_items()
    question = config.vqa.question_column
    if question not in items.columns:
        raise ValueError(f"question column {question!r} not in the dataset (vqa.question_column)")
    adapter = None

    def compute(shard: pd.DataFrame, folder: Path) -> dict[str, Any]:
        nonlocal adapter
        adapter = adapter or load_adapter(config.model, list(items["image_path"]))
        answers = adapter.answer(list(shard["image_path"]), [str(q) for q in shard[question]],
                                 progress=progress, workers=config.inference.num_workers)
        (folder / "captions.json").write_text(json.dumps(answers.texts))
        return {"failures": answers.failures}

    return run_sharded(
        items, task="vqa", model_fingerprint=fingerprint_model(config.model, dataset.digest),
        settings=generation_settings(config),
        shard_key=lambda shard: [(r.image_sha256, str(getattr(r, question)))
                                 for r in shard.itertuples()],
        compute=compute, cache=FolderCache(cache_root), shard_size=config.inference.shard_size,
        use_cache=config.inference.cache,
    )


def score(dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, out: Path) -> Scores:
    items = dataset.load_items()
    answers = load_predictions(inference)
    ok = np.array([a is not None and i not in inference.failures
                   for i, a in enumerate(answers)], dtype=bool)
    kept = items[ok]
    question_types = _column(kept, config.vqa.question_type_column)
    answer_types = _column(kept, config.vqa.answer_type_column)
    inputs = VQAInputs(ids=list(kept["item_id"]),
                       predictions=[answers[i] for i in np.flatnonzero(ok)],
                       answers=[list(c) for c in kept["captions"]],
                       question_types=question_types, answer_types=answer_types)
    run = run_metrics("vqa", config.metrics, inputs, config.metric_options)

    table = per_item_table(items, ok, inference.failures, run.per_sample, answers)
    return Scores(
        metrics=run.metrics, higher_is_better=run.higher_is_better,
        per_sample_path=write_per_sample(table, out), review_column="vqa_accuracy",
        review_worst_is_high=False, skipped=run.skipped, warnings=run.warnings,
        counts={"questions_scored": int(ok.sum()), "failed": int((~ok).sum())},
    )


register_task_kind(TaskKindSpec(
    name="vqa", infer=infer, score=score,
    display_columns=("question", "prediction", "vqa_accuracy"), model_kinds=("vqa",),
))
