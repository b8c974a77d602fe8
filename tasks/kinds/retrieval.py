"""Image-text retrieval: embed images and captions with a dual encoder, rank both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import EvalConfig
from tasks.data.base import DatasetRef, write_parquet
from tasks.inference import InferenceRef, run_sharded
from tasks.kinds.base import (
    Scores,
    TaskKindSpec,
    register_task_kind,
    run_metrics,
    status_columns,
)
from tasks.metrics.retrieval import RetrievalInputs
from tasks.models import fingerprint_model, load_adapter
from tasks.models.base import resolve_device
from tasks.tracking.cache import FolderCache


def inference_settings(config: EvalConfig) -> dict[str, Any]:
    model = config.model
    return {"kind": model.kind, "dtype": model.dtype, "amp": model.amp,
            "device": resolve_device(model.device).split(":")[0]}


def infer(dataset: DatasetRef, config: EvalConfig, cache_root: Path, progress=None) -> InferenceRef:
    items = dataset.load_items()
    fingerprint = fingerprint_model(config.model, dataset.digest)
    adapter = None

    def compute(shard: pd.DataFrame, folder: Path) -> dict[str, Any]:
        nonlocal adapter
        adapter = adapter or load_adapter(config.model, list(items["image_path"]))
        texts = [caption for captions in shard["captions"] for caption in captions]
        images = adapter.encode_images(list(shard["image_path"]), progress=progress,
                                       workers=config.inference.num_workers)
        text_vectors = adapter.encode_texts(texts, progress=progress)
        np.save(folder / "image_embeddings.npy", images.vectors)
        np.save(folder / "text_embeddings.npy", text_vectors)
        return {"failures": images.failures, "truncated_texts": adapter.count_truncated(texts)}

    return run_sharded(
        items, task="retrieval", model_fingerprint=fingerprint,
        settings=inference_settings(config),
        shard_key=lambda shard: [(row.image_sha256, list(row.captions))
                                 for row in shard.itertuples()],
        compute=compute, cache=FolderCache(cache_root), shard_size=config.inference.shard_size,
        use_cache=config.inference.cache,
    )


def load_embeddings(inference: InferenceRef) -> tuple[np.ndarray, np.ndarray]:
    images = [np.load(Path(f) / "image_embeddings.npy") for f in inference.shard_folders]
    texts = [np.load(Path(f) / "text_embeddings.npy") for f in inference.shard_folders]
    return np.concatenate(images), np.concatenate(texts)


def protocol_warning(protocol: dict[str, Any] | None, images: int, texts: int) -> str | None:
    """A loud warning when a standard benchmark split was not scored at its published size."""
    if not protocol or "images" not in protocol or "texts" not in protocol:
        return None
    if (protocol["images"], protocol["texts"]) == (images, texts):
        return None
    return (f"{protocol.get('name', 'Benchmark')} protocol is {protocol['images']:,} images / "
            f"{protocol['texts']:,} captions; this run scored {images:,} / {texts:,} — numbers "
            "are not comparable to published results")


def score(dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, out: Path) -> Scores:
    items = dataset.load_items()
    images, texts = load_embeddings(inference)
    caption_counts = items["captions"].map(len).to_numpy()
    text_owner = np.repeat(np.arange(len(items)), caption_counts)
    ok_items = np.array([i not in inference.failures for i in range(len(items))], dtype=bool)
    ok_texts = ok_items[text_owner]
    # Rows of failed items leave the ranking; indices are remapped to the kept rows.
    new_index = np.cumsum(ok_items) - 1
    inputs = RetrievalInputs(images[ok_items], texts[ok_texts], new_index[text_owner[ok_texts]])

    run = run_metrics("retrieval", config.metrics, inputs, config.metric_options)
    per_sample, warnings = run.per_sample, run.warnings

    table = status_columns(items.drop(columns=["image_sha256"]), ok_items, inference.failures)
    i2t = np.zeros(len(items), dtype=np.int64)
    i2t[ok_items] = per_sample.get("i2t_rank", np.zeros(ok_items.sum(), np.int64))
    table["i2t_rank"] = i2t
    t2i = np.zeros(len(text_owner), dtype=np.int64)
    t2i[ok_texts] = per_sample.get("t2i_rank", np.zeros(ok_texts.sum(), np.int64))
    table["t2i_ranks"] = [r.tolist() for r in np.split(t2i, np.cumsum(caption_counts)[:-1])]
    table["best_t2i_rank"] = [min(r) if r else 0 for r in table["t2i_ranks"]]
    texts_table = pd.DataFrame({
        "item_id": items["item_id"].to_numpy()[text_owner],
        "caption": [c for captions in items["captions"] for c in captions],
        "t2i_rank": t2i, "status": np.where(ok_texts, "scored", "failed"),
    })
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(table, out / "per_sample.parquet")
    write_parquet(texts_table, out / "per_sample_texts.parquet")
    if inference.info.get("truncated_texts"):
        warnings.append(f"{inference.info['truncated_texts']} caption(s) longer than the text "
                        "encoder's context were truncated")
    protocol = protocol_warning(dataset.protocol, int(ok_items.sum()), int(ok_texts.sum()))
    warnings += [protocol] if protocol else []
    return Scores(
        metrics=run.metrics, higher_is_better=run.higher_is_better,
        per_sample_path=str(out / "per_sample.parquet"),
        extra_tables={"texts": str(out / "per_sample_texts.parquet")},
        review_column="i2t_rank", review_worst_is_high=True, skipped=run.skipped,
        warnings=warnings,
        counts={"images_scored": int(ok_items.sum()), "texts_scored": int(ok_texts.sum()),
                "failed": int((~ok_items).sum())},
    )


register_task_kind(TaskKindSpec(
    name="retrieval", infer=infer, score=score,
    display_columns=("i2t_rank", "best_t2i_rank"), model_kinds=("dual_encoder",),
    count_inputs=lambda items, config: len(items) + int(items["captions"].map(len).sum()),
))
