"""Image-text matching heads (BLIP ``BlipForImageTextRetrieval`` with its ITM head): the
probability that a text describes an image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks.config import ModelConfig
from tasks.io import decode_images
from tasks.models.base import (
    Adapter,
    autocast_context,
    loading,
    register_adapter,
    resolve_model_path,
    torch_dtype,
)
from tasks.models.batching import Prepared, run_batches
from tasks.models.captioner import load_processor
from tasks.models.contracts import PairScores, Progress


@register_adapter("itm")
class ITMAdapter(Adapter):
    """Scores (image, text) pairs with a cross-attention matching head (softmax of the 'match'
    logit)."""

    def __init__(self, config: ModelConfig) -> None:
        import torch
        from transformers import BlipForImageTextRetrieval

        super().__init__(config)
        self.path = resolve_model_path(config)
        options = dict(trust_remote_code=config.trust_remote_code, local_files_only=True)
        self.image_processor, self.tokenizer, _ = load_processor(self.path, options)
        with loading("an image-text matching model", self.path):
            self.model = BlipForImageTextRetrieval.from_pretrained(
                self.path, dtype=torch_dtype(config.dtype), weights_only=True, **options)
        self.model.to(self.device).eval()
        self._torch = torch

    def _prepare(self, pairs: Sequence[tuple[str, str]]) -> Prepared[dict[str, Any]]:
        images, kept, failures = decode_images([path for path, _ in pairs])
        if not images:
            return Prepared(None, kept, failures)
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        tokens = self.tokenizer([pairs[i][1] for i in kept], padding=True, truncation=True,
                                max_length=self.tokenizer.model_max_length
                                if self.tokenizer.model_max_length < 10_000 else 512,
                                return_tensors="pt")
        return Prepared({"pixel_values": pixels, **tokens}, kept, failures)

    def score_pairs(self, image_paths: Sequence[str], texts: Sequence[str],
                    progress: Progress | None = None, workers: int = 2) -> PairScores:
        pairs = list(zip(image_paths, texts, strict=True))
        results = run_batches(len(pairs), self.config.batch_size,
                              lambda rows: self._prepare([pairs[i] for i in rows]),
                              self._match_probability, progress, workers)
        scores = np.full(len(pairs), np.nan)
        for rows, probabilities in results.outputs:
            scores[rows] = probabilities
        return PairScores(scores, results.failures)

    def _match_probability(self, inputs: dict[str, Any]) -> np.ndarray:
        torch = self._torch
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode(), autocast_context(self.device, self.config.amp):
            logits = self.model(**inputs, use_itm_head=True).itm_score
        return torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy().astype(np.float64)
