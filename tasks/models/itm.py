"""Image-text retrieval checkpoints: BLIP's ``BlipForImageTextRetrieval`` and BLIP-2's
``Blip2ForImageTextRetrieval``.

- **Pair scores** (task ``matching``): the probability that a text describes an image, from the
  ITM head (BLIP-2: the Q-Former's ITM head, averaged over the query tokens).
- **Embeddings** (tasks ``retrieval`` and ``zero_shot_classification``): BLIP's contrastive
  (ITC) image and text features, whose cosine is the model's own ITC score
  (``tasks.models.itc``). BLIP-2 has none: its ITC similarity is a max over query tokens, which
  no single image vector reproduces; asked for embeddings, it raises ``ModelError`` saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.arrays import scatter_rows
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
from tasks.models.encoder_inputs import to_device, to_model
from tasks.models.itc import BLIP2_ITC_REASON, blip_image_features, blip_text_features
from tasks.models.processors import load_processor

DEFAULT_MAX_TEXT_TOKENS = 512  # where the tokenizer states no limit (BERT's positions)


@dataclass(frozen=True)
class MatchHead:
    model_class: str
    flag: str  # the forward() argument that selects the ITM head (not the contrastive one)
    logits: str  # the output field with the (no match, match) logits
    no_embeddings: str | None = None  # why the checkpoint has no single-vector ITC embeddings


MATCH_HEADS = {
    "blip": MatchHead("BlipForImageTextRetrieval", "use_itm_head", "itm_score"),
    "blip-2": MatchHead("Blip2ForImageTextRetrieval", "use_image_text_matching_head",
                        "logits_per_image", no_embeddings=BLIP2_ITC_REASON),
}


@register_adapter("itm")
class ITMAdapter(Adapter):
    """Scores (image, text) pairs with a cross-attention matching head (softmax of the 'match'
    logit). Inputs come from the checkpoint's processor (BLIP-2's puts its query tokens
    before the text, which the model takes off again). Embeds images and texts with BLIP's
    contrastive (ITC) projections (unit vectors; their cosine is the model's ITC score)."""

    def __init__(self, config: ModelConfig) -> None:
        import torch
        import transformers

        super().__init__(config)
        self.path = resolve_model_path(config)
        options = dict(trust_remote_code=config.trust_remote_code, local_files_only=True)
        self.image_processor, self.tokenizer, self.processor = load_processor(self.path, options)
        if self.tokenizer.model_max_length > 10_000:  # "no limit": BERT positions are the limit
            self.tokenizer.model_max_length = DEFAULT_MAX_TEXT_TOKENS
        self.tokenizer.padding_side = "right"
        with loading("an image-text matching model", self.path):
            self.head = match_head(self.path, options)
            model_class = getattr(transformers, self.head.model_class)
            self.model = model_class.from_pretrained(
                self.path, dtype=torch_dtype(config.dtype), weights_only=True, **options)
        self.model.to(self.device).eval()
        self._torch = torch
        self.max_text_length = min(self.tokenizer.model_max_length, _text_positions(self.model))

    def _prepare(self, pairs: Sequence[tuple[str, str]]) -> Prepared[dict[str, Any]]:
        images, kept, failures = decode_images([path for path, _ in pairs])
        if not images:
            return Prepared(None, kept, failures)
        texts = [pairs[i][1] for i in kept]
        if self.processor is not None:
            inputs = self.processor(images=images, text=texts, padding=True, truncation=True,
                                    return_tensors="pt")
            return Prepared(dict(inputs), kept, failures)
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return Prepared({"pixel_values": pixels, **tokens}, kept, failures)

    def score_pairs(self, image_paths: Sequence[str], texts: Sequence[str],
                    progress: Progress | None = None, workers: int = 2) -> PairScores:
        pairs = list(zip(image_paths, texts, strict=True))
        results = run_batches(len(pairs), self.config.batch_size,
                              lambda rows: self._prepare([pairs[i] for i in rows]),
                              self._match_probability, progress, workers,
                              self.pin_memory)
        scores = np.full(len(pairs), np.nan)
        for rows, probabilities in results.outputs:
            scores[rows] = probabilities
        return PairScores(scores, results.failures)

    def encode_images(self, paths: Sequence[str], progress: Progress | None = None,
                      workers: int = 2) -> ImageEmbeddings:
        """BLIP's ITC image features, one unit row per image (NaN rows for failed images)."""
        self._require_embeddings()
        paths = list(paths)
        results = run_batches(len(paths), self.config.batch_size,
                              lambda rows: self._prepare_images([paths[i] for i in rows]),
                              self._image_features, progress, workers,
                              self.pin_memory)
        return ImageEmbeddings(scatter_rows(len(paths), results.outputs), results.failures)

    def encode_texts(self, texts: Sequence[str], progress: Progress | None = None
                     ) -> np.ndarray:
        """BLIP's ITC text features, one unit row per text (truncated to the text encoder's
        context; padded to the batch's longest under an attention mask)."""
        self._require_embeddings()
        texts = list(texts)
        outputs = run_all(
            len(texts), self.config.batch_size,
            lambda rows: dict(self.tokenizer([texts[i] for i in rows], padding=True,
                                             truncation=True, max_length=self.max_text_length,
                                             return_tensors="pt")),
            self._text_features, progress, self.pin_memory)
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many texts are longer than the text encoder's context (they are truncated)."""
        self._require_embeddings()
        if not texts:
            return 0
        lengths = self.tokenizer(list(texts), truncation=False)["input_ids"]
        return sum(len(ids) > self.max_text_length for ids in lengths)

    def _require_embeddings(self) -> None:
        if self.head.no_embeddings is not None:
            raise ModelError(f"{self.head.model_class} has no image and text embeddings for "
                             f"retrieval or zero-shot classification: {self.head.no_embeddings}. "
                             "Its ITM head scores pairs: use task 'matching'")

    def _prepare_images(self, paths: Sequence[str]) -> Prepared[dict[str, Any]]:
        images, kept, failures = decode_images(paths)
        if not images:
            return Prepared(None, kept, failures)
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return Prepared({"pixel_values": pixels}, kept, failures)

    def _image_features(self, inputs: dict[str, Any]) -> np.ndarray:
        inputs = to_model(inputs, self.device, self.model.dtype)
        with self._torch.inference_mode(), autocast_context(self.device, self.config.amp):
            features = blip_image_features(self.model, inputs["pixel_values"])
        return features.float().cpu().numpy()

    def _text_features(self, tokens: dict[str, Any]) -> np.ndarray:
        tokens = to_model(tokens, self.device, self.model.dtype)
        with self._torch.inference_mode(), autocast_context(self.device, self.config.amp):
            features = blip_text_features(self.model, tokens["input_ids"],
                                          tokens.get("attention_mask"))
        return features.float().cpu().numpy()

    def _match_probability(self, inputs: dict[str, Any]) -> np.ndarray:
        torch = self._torch
        inputs = {k: to_device(v, self.device) for k, v in inputs.items()}
        with torch.inference_mode(), autocast_context(self.device, self.config.amp):
            output = self.model(**inputs, **{self.head.flag: True})
        logits = getattr(output, self.head.logits)
        return torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy().astype(np.float64)


def _text_positions(model: Any) -> int:
    """The text encoder's position embeddings (BLIP's text config, BLIP-2's Q-Former's)."""
    config = model.config
    text = getattr(config, "qformer_config", None) or getattr(config, "text_config", None)
    return int(getattr(text, "max_position_embeddings", DEFAULT_MAX_TEXT_TOKENS))


def match_head(path: Any, options: dict[str, Any]) -> MatchHead:
    """The matching head of the checkpoint's model type; ``ModelError`` for other types."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(path, **options).model_type
    if model_type not in MATCH_HEADS:
        known = ", ".join(head.model_class for head in MATCH_HEADS.values())
        raise ModelError(f"model type {model_type!r} has no image-text matching head that the "
                         f"itm adapter knows ({known})")
    return MATCH_HEADS[model_type]
