"""Retrieval inference: one embedding per image and per caption, cached per shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.arrays import flatten_cells
from tasks.config import EvalConfig
from tasks.kinds.sharded import Inference, InferenceRef, ShardOutput
from tasks.models.contracts import ImageTextEncoder


def count_inputs(items: pd.DataFrame, config: EvalConfig) -> int:
    return len(items) + int(items["captions"].map(len).sum())


def infer(run: Inference) -> InferenceRef:
    def compute(shard: pd.DataFrame, folder: Path) -> ShardOutput:
        encoder = run.adapter(ImageTextEncoder)
        texts = flatten_cells(shard["captions"])
        images = encoder.encode_images(list(shard["image_path"]), progress=run.progress,
                                       workers=run.workers)
        np.save(folder / "image_embeddings.npy", images.vectors)
        np.save(folder / "text_embeddings.npy", encoder.encode_texts(texts, progress=run.progress))
        return ShardOutput(images.failures, truncated_texts=encoder.count_truncated(texts))

    return run.shards(run.items, task="retrieval", compute=compute,
                      key=lambda shard: [(row.image_sha256, list(row.captions))
                                         for row in shard.itertuples()])
