"""Text-to-image inference: features of the generated images and of the reference images, and
the embeddings of the prompts, each cached per shard.

- generated images (the dataset's items): the run model's image embeddings
  (``image_embeddings.npy``, for CLIPScore and, by default, the FID / KID features), the
  embeddings of each item's prompt (``prompt_embeddings.npy``: its first caption; ``(n, 0)``
  when the dataset has no captions column) and, with ``features: inception``, Inception-v3
  features (``inception_features.npy``);
- reference images (``text_to_image.references``, read by ``references.load_references``):
  only the configured features (``features.npy``), in shards of their own, keyed by the images'
  digests; the reference table (usable and rejected rows, with reasons) is one cache entry.

The returned ``TextToImageRef`` is the generated images' reference (failures by item row) with
the references' shards and table attached; its cache state counts both.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import EvalConfig
from tasks.data.digests import DigestCache
from tasks.io import write_parquet
from tasks.kinds.sharded import Inference, InferenceRef, ShardOutput, model_settings
from tasks.kinds.text_to_image.inception import InceptionFeatures, weights_digest
from tasks.kinds.text_to_image.references import (
    load_references,
    reference_table,
    usable_or_fail,
)
from tasks.models.base import resolve_device
from tasks.models.contracts import ImageEmbeddings, ImageTextEncoder
from tasks.tracking.fingerprint import PACKAGE_ROOT, code_version, stable_hash

# not the kind's infer module, so not in its code version: part of the features' key instead
INCEPTION_SOURCE = "kinds/text_to_image/inception.py"


@dataclass
class TextToImageRef(InferenceRef):
    """The generated images' inference plus the reference images' (``references``)."""

    references: InferenceRef | None = None
    reference_table_path: str = ""  # parquet: TABLE_COLUMNS of references.py
    reference_source: str = ""

    @property
    def cache_hit(self) -> bool:
        return super().cache_hit and (self.references is None or self.references.cache_hit)

    @property
    def cache_state(self) -> str:
        parts = [self, *([self.references] if self.references is not None else [])]
        cached = sum(p.shards_cached for p in parts)
        total = sum(len(p.shard_folders) for p in parts)
        return "hit" if cached == total else ("partial" if cached else "miss")


def count_inputs(items: pd.DataFrame, config: EvalConfig) -> int:
    """Generated images and their prompts (the reference images are not counted)."""
    return 2 * len(items)


def prompts(shard: pd.DataFrame) -> list[str] | None:
    """Each item's prompt (its first caption); None when the dataset has no captions."""
    cells = [list(c) for c in shard["captions"]]
    if not any(cells):
        return None
    return [c[0] if c else "" for c in cells]


class _Features:
    """The FID / KID feature extractor of the run: the model, or Inception-v3 (loaded once)."""

    def __init__(self, run: Inference) -> None:
        self.run = run
        self.settings = run.config.text_to_image
        self._inception: InceptionFeatures | None = None

    @property
    def inception(self) -> bool:
        return self.settings.features == "inception"

    def key(self) -> dict[str, Any]:
        """What the features depend on besides the images (the shard keys' settings)."""
        if not self.inception:
            return model_settings(self.run.config) | {"features": "model"}
        return {"features": "inception", "weights": weights_digest(
            str(self.settings.inception_weights)),
            "device": resolve_device(self.run.config.model.device).split(":")[0],
            "code": code_version(PACKAGE_ROOT, (INCEPTION_SOURCE,))}

    def encode(self, paths: list[str], progress: Any = None) -> ImageEmbeddings:
        if not self.inception:
            return self.run.adapter(ImageTextEncoder).encode_images(
                paths, progress=progress, workers=self.run.workers)
        if self._inception is None:
            model = self.run.config.model
            self._inception = InceptionFeatures(str(self.settings.inception_weights),
                                                resolve_device(model.device), model.batch_size)
        return self._inception.encode_images(paths, workers=self.run.workers)


def _generated(run: Inference, features: _Features) -> InferenceRef:
    def compute(shard: pd.DataFrame, folder: Path) -> ShardOutput:
        encoder = run.adapter(ImageTextEncoder)
        paths = list(shard["image_path"])
        images = encoder.encode_images(paths, progress=run.progress, workers=run.workers)
        np.save(folder / "image_embeddings.npy", images.vectors)
        texts = prompts(shard)
        vectors = encoder.encode_texts(texts, progress=run.progress) if texts is not None \
            else np.zeros((len(shard), 0), np.float32)
        np.save(folder / "prompt_embeddings.npy", vectors)
        failures = dict(images.failures)
        if features.inception:
            extra = features.encode(paths)
            np.save(folder / "inception_features.npy", extra.vectors)
            failures |= {row: reason for row, reason in extra.failures.items()
                         if row not in failures}
        truncated = encoder.count_truncated(texts) if texts is not None else 0
        return ShardOutput(failures, truncated_texts=truncated)

    settings = features.key() | model_settings(run.config)
    return run.shards(run.items, task="text_to_image", compute=compute, settings=settings,
                      key=lambda shard: [(row.image_sha256, list(row.captions))
                                         for row in shard.itertuples()])


def _references(run: Inference, features: _Features, items: pd.DataFrame) -> InferenceRef:
    def compute(shard: pd.DataFrame, folder: Path) -> ShardOutput:
        encoded = features.encode(list(shard["image_path"]))
        np.save(folder / "features.npy", encoded.vectors)
        return ShardOutput(encoded.failures)

    return run.shards(items, task="text_to_image_references", compute=compute,
                      settings=features.key(),
                      key=lambda shard: list(shard["image_sha256"]))


def infer(run: Inference) -> InferenceRef:
    digests = DigestCache.under(run.config.work_dir)
    try:
        references = load_references(run.config.text_to_image, digests)
    finally:
        digests.close()
    usable_or_fail(references)
    features = _Features(run)
    generated = _generated(run, features)
    reference_ref = _references(run, features, references.items)
    table = reference_table(references)

    def write_table(folder: Path) -> None:
        write_parquet(table, folder / "references.parquet")

    folder = run.entry("text_to_image_reference_table",
                       table.to_dict(orient="records"),
                       write_table, settings={})
    values = {f.name: getattr(generated, f.name) for f in fields(InferenceRef)}
    values["fingerprint"] = stable_hash([generated.fingerprint, reference_ref.fingerprint])
    return TextToImageRef(**values, references=reference_ref,
                          reference_table_path=str(folder / "references.parquet"),
                          reference_source=references.source_uri)
