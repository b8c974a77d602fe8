"""Captioning: generate a caption per image, score it against the reference captions."""

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
from tasks.models import fingerprint_model, load_adapter
from tasks.models.base import resolve_device
from tasks.tracking.cache import FolderCache

# Lower is worse for every caption metric; the review sample starts from the lowest of these.
REVIEW_PREFERENCE = ("cider", "bleu_4", "rouge_l", "meteor", "clip_score")


def generation_settings(config: EvalConfig) -> dict[str, Any]:
    model = config.model
    return {"kind": model.kind, "dtype": model.dtype, "amp": model.amp,
            "device": resolve_device(model.device).split(":")[0],
            "generation": model.generation.model_dump(), "seed": config.seed}


def infer(dataset: DatasetRef, config: EvalConfig, cache_root: Path, progress=None) -> InferenceRef:
    import torch

    items = dataset.load_items()
    adapter = None

    def compute(shard: pd.DataFrame, folder: Path) -> dict[str, Any]:
        nonlocal adapter
        adapter = adapter or load_adapter(config.model, list(items["image_path"]))
        torch.manual_seed(config.seed)  # sampling decoders
        generated = adapter.generate(list(shard["image_path"]), progress=progress,
                                     workers=config.inference.num_workers)
        (folder / "captions.json").write_text(json.dumps(generated.texts))
        return {"failures": generated.failures}

    return run_sharded(
        items, task="captioning",
        model_fingerprint=fingerprint_model(config.model, dataset.digest),
        settings=generation_settings(config),
        shard_key=lambda shard: list(shard["image_sha256"]),
        compute=compute, cache=FolderCache(cache_root), shard_size=config.inference.shard_size,
        use_cache=config.inference.cache,
    )


def load_predictions(inference: InferenceRef) -> list[str | None]:
    out: list[str | None] = []
    for folder in inference.shard_folders:
        out += json.loads((Path(folder) / "captions.json").read_text())
    return out


def caption_inputs(ids: list[str], predictions: list[str], references: list[list[str]],
                   image_paths: list[str] | None = None):
    from tasks.metrics.captioning import CaptionInputs

    return CaptionInputs(ids=ids, predictions=predictions, references=references,
                         image_paths=image_paths)


def score(dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, out: Path) -> Scores:
    items = dataset.load_items()
    predictions = load_predictions(inference)
    ok = np.array([p is not None and i not in inference.failures
                   for i, p in enumerate(predictions)], dtype=bool)
    kept = items[ok]
    inputs = caption_inputs(list(kept["item_id"]), [p for p, k in zip(predictions, ok,
                                                                       strict=True) if k],
                            [list(c) for c in kept["captions"]], list(kept["image_path"]))
    run = run_metrics("captioning", config.metrics, inputs, config.metric_options)

    table = per_item_table(items, ok, inference.failures, run.per_sample, predictions)
    review = next((c for c in REVIEW_PREFERENCE if c in run.per_sample),
                  next(iter(run.per_sample), "status"))
    return Scores(
        metrics=run.metrics, higher_is_better=run.higher_is_better,
        per_sample_path=write_per_sample(table, out), review_column=review,
        review_worst_is_high=False, skipped=run.skipped, warnings=run.warnings,
        counts={"images_scored": int(ok.sum()), "failed": int((~ok).sum())},
    )


register_task_kind(TaskKindSpec(
    name="captioning", infer=infer, score=score,
    display_columns=("prediction", "cider", "bleu_4", "clip_score"), model_kinds=("captioner",),
))
