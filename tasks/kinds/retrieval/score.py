"""Retrieval scoring: recall@K and ranks both ways over the cached embeddings; items whose
image failed leave the ranking. The per-image ``margin`` is the cosine similarity of the most
similar caption in the gallery (any image's) minus that of the second most similar: how sure the
model's top image-to-text pick is (the review's ``margin`` strategy samples the smallest);
``top_caption`` is that pick, what a reviewer judges next to the image. ``top_captions`` are the
``TOP_TEXTS`` most similar captions (most similar first) and ``top_correct`` whether each is one
of the image's own captions: what the report's galleries show (empty lists for failed items).

Similarities are scored on the model's device when that is a CUDA device (``scoring_device``;
``tasks.metrics._similarity_torch``, same results as numpy), otherwise with numpy on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.arrays import flatten_cells, l2_normalize, owners
from tasks.config import EvalConfig
from tasks.data.base import DatasetRef
from tasks.kinds.base import InferenceRef, Scores
from tasks.kinds.scoring import (
    metric_columns,
    ok_mask,
    score_metrics,
    status_columns,
    with_intervals,
    write_per_sample,
)
from tasks.kinds.sharded import load_arrays
from tasks.kinds.zero_shot.score import top_two_margin
from tasks.metrics.retrieval import BLOCK_BYTES, RetrievalInputs
from tasks.models.base import ModelError, resolve_device

TOP_TEXTS = 3  # retrieved captions per image kept for the report


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
    text_owner = owners(items["captions"].map(len).to_numpy())
    ok_items = ok_mask(len(items), inference.failures)
    ok_texts = ok_items[text_owner]
    # Rows of failed items leave the ranking; indices are remapped to the kept rows.
    new_index = np.cumsum(ok_items) - 1
    inputs = RetrievalInputs(load_arrays(inference, "image_embeddings", ok_items),
                             load_arrays(inference, "text_embeddings", ok_texts),
                             new_index[text_owner[ok_texts]],
                             scoring_device=scoring_device(config.model.device))
    run = score_metrics("retrieval", inputs, config)
    i2t, t2i = _ranks(run.per_sample, ok_items, ok_texts)
    table = _items_table(items, ok_items, inference.failures, i2t, t2i)
    per_image = {k: v for k, v in run.per_sample.items() if k not in ("i2t_rank", "t2i_rank")}
    margins, top, tops = caption_ranking(inputs, TOP_TEXTS)
    table = metric_columns(table, ok_items, per_image | {"margin": margins})
    captions = np.asarray(flatten_cells(items["captions"]), dtype=object)[ok_texts]
    table["top_caption"] = None
    table.loc[ok_items, "top_caption"] = captions[top] if len(captions) else None
    table = top_caption_columns(table, ok_items, captions, tops, inputs.text_to_image)
    texts_table = pd.DataFrame({
        "item_id": items["item_id"].to_numpy()[text_owner],
        "caption": flatten_cells(items["captions"]),
        "t2i_rank": t2i, "status": np.where(ok_texts, "scored", "failed"),
    })
    return Scores(
        metrics=with_intervals(run, table, config), higher_is_better=run.higher_is_better,
        estimates=run.estimates, per_sample_path=write_per_sample(table, out),
        extra_tables={"texts": write_per_sample(texts_table, out, "per_sample_texts")},
        review_column="i2t_rank", review_worst_is_high=True, skipped=run.skipped,
        warnings=run.warnings + _warnings(dataset, inference, ok_items, ok_texts),
        counts={"images_scored": int(ok_items.sum()), "texts_scored": int(ok_texts.sum()),
                "failed": int((~ok_items).sum())},
    )


def scoring_device(device: str) -> str | None:
    """The torch device retrieval scoring runs on: the model's device (``auto`` resolved) when
    it is a CUDA device that is there; None (numpy on the CPU) otherwise."""
    if device != "auto" and not device.startswith("cuda"):
        return None  # cpu / mps: no torch import
    try:
        resolved = resolve_device(device)
    except ModelError:  # cuda asked for where there is none (e.g. re-scoring a cached run)
        return None
    return resolved if resolved.startswith("cuda") else None


def caption_margins(inputs: RetrievalInputs) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the similarity of its most similar text in the gallery minus that of the
    second most similar (NaN with fewer than two texts), and the index of that most similar
    text (what the model retrieves); a block of images at a time."""
    margins, top, _ = caption_ranking(inputs, 1)
    return margins, top


def caption_ranking(inputs: RetrievalInputs, count: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``caption_margins`` plus, per image, the indices of its ``count`` most similar texts
    (most similar first; ``(images, min(count, texts))``), in one pass over the blocks (on
    ``inputs.scoring_device`` when it is set)."""
    images = l2_normalize(inputs.image_embeddings)
    texts = l2_normalize(inputs.text_embeddings)
    step = max(1, BLOCK_BYTES // (4 * max(len(texts), 1)))
    if inputs.scoring_device is not None:
        from tasks.metrics._similarity_torch import caption_ranking as device_caption_ranking

        return device_caption_ranking(images, texts, count, step, inputs.scoring_device)
    margins, top, tops = [], [], []
    for start in range(0, len(images), step):
        sims = images[start:start + step] @ texts.T
        margins.append(top_two_margin(sims))
        top.append(sims.argmax(axis=1) if sims.shape[1] else np.zeros(len(sims), np.int64))
        tops.append(most_similar(sims, count))
    if not margins:
        return np.empty(0), np.empty(0, np.int64), np.empty((0, 0), np.int64)
    return np.concatenate(margins), np.concatenate(top), np.concatenate(tops)


def most_similar(sims: np.ndarray, count: int) -> np.ndarray:
    """Per row, the column indices of the ``count`` largest values, largest first (ties: lower
    index first, also at the cut); a partial sort, so a large gallery is never fully sorted:
    the candidates are the entries at least the row's ``count``-th largest value."""
    n = sims.shape[1]
    count = min(count, n)
    out = np.zeros((len(sims), count), np.int64)
    if count == 0:
        return out
    kth = np.partition(sims, n - count, axis=1)[:, n - count]
    rows, cols = np.nonzero(sims >= kth[:, None])
    order = np.lexsort((cols, -sims[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)  # 0-based, within the row
    shown = position < count
    out[rows[shown], position[shown]] = cols[shown]
    return out


def top_caption_columns(table: pd.DataFrame, ok: np.ndarray, captions: np.ndarray,
                        tops: np.ndarray, text_to_image: np.ndarray) -> pd.DataFrame:
    """``top_captions`` (texts) and ``top_correct`` (whether each is one of the image's own
    captions) per item; ``tops`` holds the kept images' rows of kept-text indices."""
    texts: list[list[str]] = [[] for _ in range(len(table))]
    correct: list[list[bool]] = [[] for _ in range(len(table))]
    for image, (row, indices) in enumerate(zip(np.flatnonzero(ok), tops, strict=True)):
        texts[row] = [str(captions[i]) for i in indices]
        correct[row] = [bool(text_to_image[i] == image) for i in indices]
    table["top_captions"], table["top_correct"] = texts, correct
    return table


def _ranks(per_sample: dict[str, np.ndarray], ok_items: np.ndarray, ok_texts: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Ranks aligned to all items / all texts (0 where not scored)."""
    i2t = np.zeros(len(ok_items), dtype=np.int64)
    i2t[ok_items] = per_sample.get("i2t_rank", np.zeros(ok_items.sum(), np.int64))
    t2i = np.zeros(len(ok_texts), dtype=np.int64)
    t2i[ok_texts] = per_sample.get("t2i_rank", np.zeros(ok_texts.sum(), np.int64))
    return i2t, t2i


def _items_table(items: pd.DataFrame, ok: np.ndarray, failures: dict[int, str],
                 i2t: np.ndarray, t2i: np.ndarray) -> pd.DataFrame:
    caption_counts = items["captions"].map(len).to_numpy()
    table = status_columns(items.drop(columns=["image_sha256"]), ok, failures)
    table["i2t_rank"] = i2t
    table["t2i_ranks"] = [r.tolist() for r in np.split(t2i, np.cumsum(caption_counts)[:-1])]
    table["best_t2i_rank"] = [min(r) if r else 0 for r in table["t2i_ranks"]]
    return table


def _warnings(dataset: DatasetRef, inference: InferenceRef, ok_items: np.ndarray,
              ok_texts: np.ndarray) -> list[str]:
    warnings = []
    if inference.truncated_texts:
        warnings.append(f"{inference.truncated_texts} caption(s) longer than the text "
                        "encoder's context were truncated")
    protocol = protocol_warning(dataset.protocol, int(ok_items.sum()), int(ok_texts.sum()))
    return warnings + ([protocol] if protocol else [])
