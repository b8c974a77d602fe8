"""CLIPScore and RefCLIPScore (Hessel et al., 2021) with any ``dual_encoder`` model as scorer.

CLIP-S(c, v) = w · max(cos(c, v), 0) with w = 2.5, where c is the candidate caption's text
embedding and v the image embedding. RefCLIP-S is the harmonic mean of CLIP-S and
max(max_r cos(c, r), 0) over the references r — as in the authors' reference code. Candidates
are prefixed with "A photo depicts " by default, as in the paper; set ``prefix: ""`` to score the
bare caption (torchmetrics' CLIPScore does that and reports 100 · cos instead).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from tasks.arrays import flatten_cells, l2_normalize, owners
from tasks.metrics.base import MetricResult, register_metric
from tasks.stats.estimates import mean

W = 2.5
DEFAULT_PREFIX = "A photo depicts "


def clip_scores(
    image_embeddings: np.ndarray,
    candidate_embeddings: np.ndarray,
    reference_embeddings: np.ndarray | None = None,
    reference_owner: np.ndarray | None = None,
    w: float = W,
) -> dict[str, np.ndarray]:
    """Per-sample CLIP-S and (with references) RefCLIP-S from raw embeddings."""
    images = l2_normalize(image_embeddings, np.float64)
    candidates = l2_normalize(candidate_embeddings, np.float64)
    clip_s = w * np.clip((images * candidates).sum(axis=1), 0, None)
    out = {"clip_score": clip_s}
    if reference_embeddings is not None and reference_owner is not None:
        refs = l2_normalize(reference_embeddings, np.float64)
        sims = (refs * candidates[reference_owner]).sum(axis=1)
        best = np.full(len(candidates), -np.inf)
        np.maximum.at(best, reference_owner, sims)
        best = np.clip(best, 0, None)
        total = clip_s + best
        out["ref_clip_score"] = np.divide(2 * clip_s * best, total, out=np.zeros_like(total),
                                          where=total > 0)
    return out


@lru_cache(maxsize=2)
def _scorer(path: str, device: str, batch_size: int) -> Any:
    from tasks.config import ModelConfig
    from tasks.models import load_adapter

    return load_adapter(ModelConfig(path=path, device=device, batch_size=batch_size))


@register_metric("clip_score", task="captioning",
                 outputs={"clip_score": True, "ref_clip_score": True})
def clip_score(inputs: Any, model: str | None = None, prefix: str = DEFAULT_PREFIX,
               device: str = "auto", batch_size: int = 64, w: float = W) -> MetricResult:
    """CLIPScore / RefCLIPScore of captions against their images with a dual encoder; in an
    evaluation ``device`` and ``batch_size`` default to the run's."""
    if not model:
        return MetricResult.skip(
            "no scorer model: set metric_options.clip_score.model to a dual_encoder checkpoint"
        )
    image_paths = getattr(inputs, "image_paths", None)
    if not image_paths:
        return MetricResult.skip("clip_score needs the images (not available for text-only "
                                 "scoring)")
    scorer = _scorer(model, device, batch_size)
    images = scorer.encode_images(list(image_paths))
    if images.failures:
        return MetricResult.skip(f"{len(images.failures)} image(s) could not be decoded")
    candidates = scorer.encode_texts([prefix + p for p in inputs.predictions])
    flat_refs = flatten_cells(inputs.references)
    owner = owners([len(r) for r in inputs.references])
    per_sample = clip_scores(images.vectors, candidates,
                             scorer.encode_texts([prefix + r for r in flat_refs]), owner, w)
    corpus = {k: float(v.mean()) for k, v in per_sample.items()}
    return MetricResult(corpus=corpus, per_sample=per_sample,
                        estimates={key: mean(key) for key in per_sample})
