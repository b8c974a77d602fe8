"""CLIP-style dual encoders through transformers ``AutoModel`` + ``AutoProcessor``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks.arrays import l2_normalize, scatter_rows
from tasks.config import ModelConfig
from tasks.io import decode_images
from tasks.models.base import (
    Adapter,
    ModelError,
    autocast_context,
    loading,
    register_adapter,
    resolve_model_path,
    torch_dtype,
)
from tasks.models.batching import Prepared, chunks, run_batches
from tasks.models.contracts import ImageEmbeddings, PairScores, Progress


def _features(output: Any) -> Any:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    return getattr(output, "pooler_output", output)


@register_adapter("dual_encoder")
class DualEncoderAdapter(Adapter):
    """Embeds images and texts into one space (CLIP, SigLIP, ... via get_*_features)."""

    def __init__(self, config: ModelConfig) -> None:
        import torch
        from transformers import AutoModel, AutoProcessor

        super().__init__(config)
        self.path = resolve_model_path(config)
        options = dict(trust_remote_code=config.trust_remote_code, local_files_only=True)
        with loading("dual encoder", self.path):
            self.processor = AutoProcessor.from_pretrained(self.path, **options)
            self.model = AutoModel.from_pretrained(
                self.path, dtype=torch_dtype(config.dtype), weights_only=True, **options
            )
        for method in ("get_image_features", "get_text_features"):
            if not hasattr(self.model, method):
                raise ModelError(f"{type(self.model).__name__} has no {method}: not a dual encoder")
        self.model.to(self.device).eval()
        self._torch = torch
        self.max_text_length = _max_text_length(self.model, self.processor)

    def _prepare_images(self, paths: Sequence[str]) -> Prepared[Any]:
        images, kept, failures = decode_images(paths)
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"] if images \
            else None
        return Prepared(pixels, kept, failures)

    def encode_images(
        self, paths: Sequence[str], progress: Progress | None = None, workers: int = 2
    ) -> ImageEmbeddings:
        paths = list(paths)
        results = run_batches(
            len(paths), self.config.batch_size,
            lambda rows: self._prepare_images([paths[i] for i in rows]),
            lambda pixels: self._run("get_image_features", pixel_values=pixels),
            progress, workers)
        return ImageEmbeddings(scatter_rows(len(paths), results.outputs), results.failures)

    def encode_texts(self, texts: Sequence[str], progress: Progress | None = None
                     ) -> np.ndarray:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        outputs = []
        for batch in chunks(list(texts), self.config.batch_size):
            tokens = tokenizer(list(batch), padding=True, truncation=True,
                               max_length=self.max_text_length, return_tensors="pt")
            outputs.append(self._run("get_text_features", **tokens))
            if progress is not None:
                progress(len(batch))
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)

    def score_pairs(self, image_paths: Sequence[str], texts: Sequence[str],
                    progress: Progress | None = None, workers: int = 2) -> PairScores:
        """Cosine similarity of each (image, text) pair; each distinct image/text is embedded
        once."""
        unique_paths = list(dict.fromkeys(image_paths))
        unique_texts = list(dict.fromkeys(texts))
        images = self.encode_images(unique_paths, workers=workers)
        text_vectors = self.encode_texts(unique_texts)
        image_row = {p: i for i, p in enumerate(unique_paths)}
        text_row = {t: i for i, t in enumerate(unique_texts)}
        a = l2_normalize(images.vectors[[image_row[p] for p in image_paths]])
        b = l2_normalize(text_vectors[[text_row[t] for t in texts]])
        failures = {row: images.failures[image_row[p]] for row, p in enumerate(image_paths)
                    if image_row[p] in images.failures}
        if progress is not None:
            progress(len(image_paths))
        return PairScores((a * b).sum(axis=1).astype(np.float64), failures)

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many texts are longer than the model's context (they are truncated)."""
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        lengths = tokenizer(list(texts), truncation=False)["input_ids"]
        return sum(len(ids) > self.max_text_length for ids in lengths)

    def _run(self, method: str, **inputs: Any) -> np.ndarray:
        torch = self._torch
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs and self.model.dtype != torch.float32:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode(), autocast_context(self.device, self.config.amp):
            features = _features(getattr(self.model, method)(**inputs))
        return features.float().cpu().numpy()


def _max_text_length(model: Any, processor: Any) -> int:
    config = getattr(model.config, "text_config", model.config)
    limit = getattr(config, "max_position_embeddings", None)
    tokenizer = getattr(processor, "tokenizer", processor)
    model_max = getattr(tokenizer, "model_max_length", None)
    candidates = [v for v in (limit, model_max) if isinstance(v, int) and 0 < v < 1_000_000]
    if not candidates:
        raise ModelError("cannot determine the text encoder's maximum length")
    return min(candidates)
