"""What adapters promise: one ``Protocol`` per family, and the results they hand back.

A task kind asks its adapter for the family it needs (``Inference.adapter(PairScorer)``); an
adapter that lacks it is refused with a message naming the missing method, before any shard
runs. The protocols are ``runtime_checkable``, so the check is by method presence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

Progress = Callable[[int], Any]


@dataclass
class ImageEmbeddings:
    vectors: np.ndarray  # (n, d) float32; rows of failed images are NaN
    failures: dict[int, str] = field(default_factory=dict)  # row -> reason


@dataclass
class PairScores:
    """Match scores of (image, text) pairs: higher = more likely a match; NaN where failed."""

    scores: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)  # pair row -> reason


@dataclass
class Generated:
    texts: list[str | None]  # None where the image failed
    failures: dict[int, str] = field(default_factory=dict)


@runtime_checkable
class ImageTextEncoder(Protocol):
    """Embeds images and texts into one space (dual encoders: CLIP, SigLIP, ...)."""

    def encode_images(self, paths: Sequence[str], progress: Progress | None = None,
                      workers: int = 2) -> ImageEmbeddings: ...

    def encode_texts(self, texts: Sequence[str], progress: Progress | None = None
                     ) -> np.ndarray: ...

    def count_truncated(self, texts: Sequence[str]) -> int: ...


@runtime_checkable
class PairScorer(Protocol):
    """Scores (image, text) pairs: cosine, an ITM head or a fusion model's match probability."""

    def score_pairs(self, image_paths: Sequence[str], texts: Sequence[str],
                    progress: Progress | None = None, workers: int = 2) -> PairScores: ...


@runtime_checkable
class CaptionGenerator(Protocol):
    """Generates one text per image, optionally continuing a prompt per image."""

    def generate(self, paths: Sequence[str], prompts: Sequence[str | None] | None = None,
                 progress: Progress | None = None, workers: int = 2) -> Generated: ...


@runtime_checkable
class VQAAnswerer(Protocol):
    """Answers one question per image."""

    def answer(self, paths: Sequence[str], questions: Sequence[str],
               progress: Progress | None = None, workers: int = 2) -> Generated: ...


@runtime_checkable
class ImageClassifier(Protocol):
    """Class probabilities ``(n, C)`` per image (optionally per (image, text) pair)."""

    def classify(self, image_paths: Sequence[str], texts: Sequence[str] | None = None,
                 progress: Progress | None = None, workers: int = 2
                 ) -> tuple[np.ndarray, dict[int, str]]: ...


FAMILY_METHODS: dict[type, str] = {
    ImageTextEncoder: "encode_images/encode_texts", PairScorer: "score_pairs",
    CaptionGenerator: "generate", VQAAnswerer: "answer", ImageClassifier: "classify",
}
