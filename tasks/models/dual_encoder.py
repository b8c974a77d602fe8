"""Dual encoders (CLIP, SigLIP, SigLIP 2, ...) through transformers ``AutoModel`` +
``AutoProcessor``, each called with its family's conventions (``tasks.models.encoder_inputs``):
text padding, image-processor outputs, and the pair score of the matching kind."""

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
from tasks.models.batching import Prepared, run_all, run_batches
from tasks.models.contracts import ImageEmbeddings, PairScores, Progress
from tasks.models.encoder_inputs import (
    encoder_family,
    family_texts,
    image_inputs,
    match_probability,
    sigmoid_parameters,
    text_inputs,
    to_model,
)


def _features(output: Any) -> Any:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    return getattr(output, "pooler_output", output)


@register_adapter("dual_encoder")
class DualEncoderAdapter(Adapter):
    """Embeds images and texts into one space (``get_image_features`` / ``get_text_features``)
    and scores (image, text) pairs: cosine, or SigLIP's sigmoid match probability."""

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
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.family = encoder_family(self.model)
        self.max_text_length = _max_text_length(self.model, self.processor)
        self.sigmoid = sigmoid_parameters(self.model) if self.family.pair_score == "sigmoid" \
            else None

    def describe(self) -> dict[str, str]:
        """Device and dtype, plus the family conventions in use (text padding, pair score)."""
        pair_score = "cosine" if self.sigmoid is None else \
            "sigmoid(logit_scale.exp() * cosine + logit_bias)"
        return super().describe() | {
            "text_padding": f"{self.family.text_padding} ({self.max_text_length} tokens max)",
            "pair_score": pair_score}

    def _prepare_images(self, paths: Sequence[str]) -> Prepared[dict[str, Any]]:
        images, kept, failures = decode_images(paths)
        inputs = image_inputs(self.processor, images) if images else None
        return Prepared(inputs, kept, failures)

    def encode_images(
        self, paths: Sequence[str], progress: Progress | None = None, workers: int = 2
    ) -> ImageEmbeddings:
        paths = list(paths)
        results = run_batches(
            len(paths), self.config.batch_size,
            lambda rows: self._prepare_images([paths[i] for i in rows]),
            lambda inputs: self._run("get_image_features", inputs),
            progress, workers, self.pin_memory)
        return ImageEmbeddings(scatter_rows(len(paths), results.outputs), results.failures)

    def encode_texts(self, texts: Sequence[str], progress: Progress | None = None
                     ) -> np.ndarray:
        texts = list(texts)
        outputs = run_all(
            len(texts), self.config.batch_size,
            lambda rows: text_inputs(self.tokenizer, [texts[i] for i in rows], self.family,
                                     self.max_text_length),
            lambda tokens: self._run("get_text_features", tokens), progress, self.pin_memory)
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)

    def score_pairs(self, image_paths: Sequence[str], texts: Sequence[str],
                    progress: Progress | None = None, workers: int = 2) -> PairScores:
        """The match score of each (image, text) pair: the cosine of their embeddings for
        CLIP-style models, ``sigmoid(logit_scale.exp() * cosine + logit_bias)`` (the model's own
        match probability) for SigLIP families. Each distinct image/text is embedded once."""
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
        return PairScores(self.pair_score((a * b).sum(axis=1)), failures)

    def pair_score(self, cosine: np.ndarray) -> np.ndarray:
        """The family's match score from pair cosines (float64): the cosine itself, or SigLIP's
        ``sigmoid(logit_scale.exp() * cosine + logit_bias)``."""
        cosine = np.asarray(cosine, dtype=np.float64)
        return cosine if self.sigmoid is None else match_probability(cosine, *self.sigmoid)

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many texts are longer than the model's context (they are truncated)."""
        if not texts:
            return 0
        lengths = self.tokenizer(family_texts(texts, self.family), truncation=False)["input_ids"]
        return sum(len(ids) > self.max_text_length for ids in lengths)

    def _run(self, method: str, inputs: dict[str, Any]) -> np.ndarray:
        torch = self._torch
        inputs = to_model(inputs, self.device, self.model.dtype)
        with torch.inference_mode(), autocast_context(self.device, self.config.amp):
            features = _features(getattr(self.model, method)(**inputs))
        return features.float().cpu().numpy()


def _max_text_length(model: Any, processor: Any) -> int:
    """The text encoder's context: the smaller of its position embeddings and the tokenizer's
    ``model_max_length`` (Gemma tokenizers leave the latter unset, a huge placeholder)."""
    config = getattr(model.config, "text_config", model.config)
    limit = getattr(config, "max_position_embeddings", None)
    tokenizer = getattr(processor, "tokenizer", processor)
    model_max = getattr(tokenizer, "model_max_length", None)
    candidates = [v for v in (limit, model_max) if isinstance(v, int) and 0 < v < 1_000_000]
    if not candidates:
        raise ModelError("cannot determine the text encoder's maximum length")
    return min(candidates)
