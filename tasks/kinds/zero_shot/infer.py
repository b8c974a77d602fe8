"""Zero-shot inference: image embeddings per shard, and one class-embedding entry (CLIP recipe:
each prompt embedding L2-normalised, averaged over templates, normalised again)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.arrays import l2_normalize
from tasks.config import EvalConfig
from tasks.kinds.sharded import Inference, InferenceRef, ShardOutput
from tasks.models.contracts import ImageTextEncoder


def class_names(config: EvalConfig, items: pd.DataFrame) -> list[str]:
    if config.zero_shot.class_names:
        return list(config.zero_shot.class_names)
    return sorted({str(label) for label in items["label"].dropna()})


def class_embeddings(encoder: ImageTextEncoder, names: list[str], templates: list[str]
                     ) -> np.ndarray:
    prompts = [template.format(name) for name in names for template in templates]
    vectors = l2_normalize(encoder.encode_texts(prompts))
    averaged = vectors.reshape(len(names), len(templates), -1).mean(axis=1)
    return l2_normalize(averaged)


def infer(run: Inference) -> InferenceRef:
    names = class_names(run.config, run.items)
    if not names:
        raise ValueError("no class names: give zero_shot.class_names or a dataset label column")
    templates = run.config.zero_shot.templates

    def compute(shard: pd.DataFrame, folder: Path) -> ShardOutput:
        images = run.adapter(ImageTextEncoder).encode_images(
            list(shard["image_path"]), progress=run.progress, workers=run.workers)
        np.save(folder / "image_embeddings.npy", images.vectors)
        return ShardOutput(images.failures)

    def write_classes(folder: Path) -> None:
        vectors = class_embeddings(run.adapter(ImageTextEncoder), names, templates)
        np.save(folder / "class_embeddings.npy", vectors)

    ref = run.shards(run.items, task="zero_shot_images", compute=compute,
                     key=lambda shard: list(shard["image_sha256"]))
    folder = run.entry("zero_shot_classes", [names, templates], write_classes)
    ref.class_names = names
    ref.class_embeddings_path = str(folder / "class_embeddings.npy")
    return ref
