"""Zero-shot classification with a dual encoder: class names x prompt templates (CLIP recipe:
each prompt embedding L2-normalised, averaged over templates, normalised again), the image is
assigned the class of highest cosine similarity."""

from __future__ import annotations

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
from tasks.kinds.retrieval import inference_settings
from tasks.metrics.classification import ClassificationInputs
from tasks.metrics.retrieval import l2_normalize
from tasks.models import fingerprint_model, load_adapter
from tasks.tracking.cache import FolderCache
from tasks.tracking.fingerprint import inference_fingerprint, stable_hash


def class_names(config: EvalConfig, items: pd.DataFrame) -> list[str]:
    if config.zero_shot.class_names:
        return list(config.zero_shot.class_names)
    return sorted({str(label) for label in items["label"].dropna()})


def class_embeddings(adapter: Any, names: list[str], templates: list[str]) -> np.ndarray:
    prompts = [template.format(name) for name in names for template in templates]
    vectors = l2_normalize(adapter.encode_texts(prompts))
    averaged = vectors.reshape(len(names), len(templates), -1).mean(axis=1)
    return l2_normalize(averaged)


def infer(dataset: DatasetRef, config: EvalConfig, cache_root: Path, progress=None) -> InferenceRef:
    items = dataset.load_items()
    names = class_names(config, items)
    if not names:
        raise ValueError("no class names: give zero_shot.class_names or a dataset label column")
    fingerprint = fingerprint_model(config.model, dataset.digest)
    settings = inference_settings(config)
    cache = FolderCache(cache_root)
    adapter = None

    def model():
        nonlocal adapter
        adapter = adapter or load_adapter(config.model, list(items["image_path"]))
        return adapter

    def compute(shard: pd.DataFrame, folder: Path) -> dict[str, Any]:
        images = model().encode_images(list(shard["image_path"]), progress=progress,
                                       workers=config.inference.num_workers)
        np.save(folder / "image_embeddings.npy", images.vectors)
        return {"failures": images.failures}

    ref = run_sharded(items, task="zero_shot_images", model_fingerprint=fingerprint,
                      settings=settings, shard_key=lambda shard: list(shard["image_sha256"]),
                      compute=compute, cache=cache, shard_size=config.inference.shard_size,
                      use_cache=config.inference.cache)
    key = inference_fingerprint(task="zero_shot_classes", model=fingerprint, settings=settings,
                                data=stable_hash([names, config.zero_shot.templates]))
    folder = cache.get(key) if config.inference.cache else None
    if folder is None:
        folder = cache.put(key, lambda path: np.save(
            path / "class_embeddings.npy",
            class_embeddings(model(), names, config.zero_shot.templates)))
    ref.info["class_embeddings"] = str(folder / "class_embeddings.npy")
    ref.info["class_names"] = names
    return ref


def score(dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, out: Path) -> Scores:
    items = dataset.load_items()
    names = inference.info["class_names"]
    images = np.concatenate([np.load(Path(f) / "image_embeddings.npy")
                             for f in inference.shard_folders])
    classes = np.load(inference.info["class_embeddings"])
    failures = dict(inference.failures)
    known = set(names)
    for row, label in enumerate(items["label"]):
        if row in failures:
            continue
        if label is None or pd.isna(label):
            failures[row] = "no label"
        elif label not in known:
            failures[row] = f"label {label!r} is not among the class names"
    ok = np.array([row not in failures for row in range(len(items))], dtype=bool)
    sims = l2_normalize(images[ok]) @ classes.T
    predicted = [names[i] for i in sims.argmax(axis=1)]
    kept = items[ok]
    inputs = ClassificationInputs(ids=list(kept["item_id"]), labels=list(kept["label"]),
                                  predictions=predicted, scores=sims, class_names=names)
    run = run_metrics("classification", config.metrics, inputs, config.metric_options)

    full = iter(predicted)
    table = per_item_table(items, ok, failures, run.per_sample,
                           [next(full) if k else None for k in ok])
    out.mkdir(parents=True, exist_ok=True)
    files = _confusion_matrix_file(run.extra.get("classification", {}), out)
    review = "correct" if "correct" in run.per_sample else "status"
    return Scores(
        metrics=run.metrics, higher_is_better=run.higher_is_better,
        per_sample_path=write_per_sample(table, out), review_column=review,
        review_worst_is_high=False, skipped=run.skipped, warnings=run.warnings, files=files,
        counts={"images_scored": int(ok.sum()), "failed": int((~ok).sum()),
                "classes": len(names)},
    )


def _confusion_matrix_file(extra: dict[str, Any], out: Path) -> dict[str, str]:
    matrix = extra.get("confusion_matrix")
    if not matrix:
        return {}
    frame = pd.DataFrame(matrix["matrix"], index=matrix["labels"], columns=matrix["labels"])
    frame.index.name = "label \\ predicted"
    path = out / "confusion_matrix.csv"
    frame.to_csv(path)
    return {"confusion_matrix.csv": str(path)}


register_task_kind(TaskKindSpec(
    name="zero_shot_classification", infer=infer, score=score,
    display_columns=("label", "prediction", "correct"), model_kinds=("dual_encoder",),
    metric_task="classification",
))
