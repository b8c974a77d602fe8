"""Image-text retrieval metrics with the CLIP / CLIP_benchmark protocol, computed in chunks.

Cosine similarity of L2-normalised embeddings. Image->text (i2t): an image is a hit at k when
any of its captions is among the k most similar texts. Text->image (t2i): a text is a hit at k
when its image is among the k most similar images. Ranks are 1-based; ties are broken by index
(the order a stable descending sort gives), so results are deterministic.

Memory stays bounded: similarities are computed for ``chunk`` rows at a time and each row's rank
is a count of strictly better candidates, so no texts x k x images one-hot is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import PositiveInt

from tasks.arrays import l2_normalize
from tasks.metrics.base import MetricResult, register_metric
from tasks.stats.estimates import Estimate, mean

DEFAULT_KS = (1, 5, 10)
# Target size of one similarity block in bytes (float32); bounds peak memory.
BLOCK_BYTES = 64 * 1024 * 1024


@dataclass
class RetrievalInputs:
    image_embeddings: np.ndarray  # (n_images, d)
    text_embeddings: np.ndarray  # (n_texts, d)
    text_to_image: np.ndarray  # (n_texts,) image row of each text

    def __post_init__(self) -> None:
        self.text_to_image = np.asarray(self.text_to_image, dtype=np.int64)
        images, texts = self.image_embeddings, self.text_embeddings
        if images.ndim != 2 or texts.ndim != 2:
            raise ValueError("embeddings must be 2-D arrays (rows x dims)")
        if images.shape[1] != texts.shape[1]:
            raise ValueError(
                f"image and text embeddings differ in width: {images.shape[1]} vs {texts.shape[1]}"
            )
        if self.text_to_image.shape != (len(texts),):
            raise ValueError(
                f"text_to_image must have one entry per text ({len(texts)}), "
                f"got shape {self.text_to_image.shape}"
            )
        if len(texts) and (self.text_to_image.min() < 0 or self.text_to_image.max() >= len(images)):
            raise ValueError(f"text_to_image holds indices outside 0..{len(images) - 1}")
        for name, array in (("image", images), ("text", texts)):
            if not np.isfinite(array).all():
                raise ValueError(f"{name} embeddings contain NaN or infinite values")


def _rows_per_block(columns: int) -> int:
    return max(1, BLOCK_BYTES // (4 * max(columns, 1)))


def text_to_image_ranks(
    images: np.ndarray, texts: np.ndarray, text_to_image: np.ndarray
) -> np.ndarray:
    """1-based rank of each text's own image among all images (inputs already normalised)."""
    ranks = np.empty(len(texts), dtype=np.int64)
    columns = np.arange(len(images))
    step = _rows_per_block(len(images))
    for start in range(0, len(texts), step):
        stop = min(start + step, len(texts))
        sims = texts[start:stop] @ images.T
        target = text_to_image[start:stop]
        positive = sims[np.arange(stop - start), target][:, None]
        better = (sims > positive) | ((sims == positive) & (columns[None, :] < target[:, None]))
        ranks[start:stop] = better.sum(axis=1) + 1
    return ranks


def image_to_text_ranks(
    images: np.ndarray, texts: np.ndarray, text_to_image: np.ndarray
) -> np.ndarray:
    """1-based rank of each image's best-ranked caption among all texts; 0 if it has none."""
    ranks = np.zeros(len(images), dtype=np.int64)
    columns = np.arange(len(texts))
    order = np.argsort(text_to_image, kind="stable")  # texts grouped by image, index order kept
    owners = text_to_image[order]
    step = _rows_per_block(len(texts))
    for start in range(0, len(images), step):
        stop = min(start + step, len(images))
        lo, hi = np.searchsorted(owners, [start, stop])
        if lo == hi:
            continue
        sims = images[start:stop] @ texts.T
        pos_text, pos_image = order[lo:hi], owners[lo:hi] - start
        pos_sims = sims[pos_image, pos_text]
        # best positive per image; among equal sims, the lowest text index (stable order)
        best_sim = np.full(stop - start, -np.inf, dtype=sims.dtype)
        np.maximum.at(best_sim, pos_image, pos_sims)
        is_best = pos_sims == best_sim[pos_image]
        best_text = np.full(stop - start, len(texts), dtype=np.int64)
        np.minimum.at(best_text, pos_image[is_best], pos_text[is_best])
        has = best_text < len(texts)
        better = (sims > best_sim[:, None]) | (
            (sims == best_sim[:, None]) & (columns[None, :] < best_text[:, None])
        )
        ranks[start:stop] = np.where(has, better.sum(axis=1) + 1, 0)
    return ranks


def summarize_ranks(prefix: str, ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    if len(ranks) == 0:
        return {}
    out = {f"{prefix}_recall_at_{k}": float(np.mean(ranks <= k)) for k in ks}
    out[f"{prefix}_mean_rank"] = float(np.mean(ranks))
    out[f"{prefix}_median_rank"] = float(np.median(ranks))
    return out


def retrieval_scores(inputs: RetrievalInputs, ks: tuple[int, ...] = DEFAULT_KS) -> MetricResult:
    images = l2_normalize(inputs.image_embeddings)
    texts = l2_normalize(inputs.text_embeddings)
    t2i = text_to_image_ranks(images, texts, inputs.text_to_image)
    i2t = image_to_text_ranks(images, texts, inputs.text_to_image)
    without_text = int((i2t == 0).sum())
    corpus = summarize_ranks("i2t", i2t[i2t > 0], ks) | summarize_ranks("t2i", t2i, ks)
    extra: dict[str, Any] = {"images": len(images), "texts": len(texts)}
    if without_text:
        extra["warnings"] = [f"{without_text} image(s) have no caption and are left out of i2t"]
    per_image = image_statistics(i2t, t2i, inputs.text_to_image, ks)
    return MetricResult(corpus=corpus, per_sample={"i2t_rank": i2t, "t2i_rank": t2i} | per_image,
                        extra=extra, estimates=retrieval_estimates(ks))


def image_statistics(i2t: np.ndarray, t2i: np.ndarray, text_to_image: np.ndarray,
                     ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per-image columns from which every retrieval metric is recomputed with images as the
    unit: i2t hits and rank (NaN for an image without captions), and per image the number of its
    captions, of those ranked in the top k, and the sum of their ranks."""
    n = len(i2t)
    has_text = i2t > 0
    out = {f"i2t_hit_at_{k}": np.where(has_text, (i2t <= k) & has_text, np.nan) for k in ks}
    out["i2t_best_rank"] = np.where(has_text, i2t, np.nan)
    out["texts"] = np.bincount(text_to_image, minlength=n).astype(np.float64)
    out |= {f"t2i_hits_at_{k}": np.bincount(text_to_image, weights=(t2i <= k), minlength=n)
            for k in ks}
    out["t2i_rank_sum"] = np.bincount(text_to_image, weights=t2i, minlength=n)
    return {key: np.asarray(value, dtype=np.float64) for key, value in out.items()}


def retrieval_estimates(ks: tuple[int, ...]) -> dict[str, Estimate]:
    """Images are the unit of resampling in both directions: text-to-image values are ratios
    over an image's captions, so the captions of one image are never treated as independent.
    The t2i median rank needs the per-image list column ``t2i_ranks``."""
    estimates: dict[str, Estimate] = {}
    for k in ks:
        estimates[f"i2t_recall_at_{k}"] = mean(f"i2t_hit_at_{k}")
        estimates[f"t2i_recall_at_{k}"] = Estimate("ratio", (f"t2i_hits_at_{k}", "texts"))
    return estimates | {
        "i2t_mean_rank": mean("i2t_best_rank"),
        "i2t_median_rank": Estimate("median", ("i2t_best_rank",)),
        "t2i_mean_rank": Estimate("ratio", ("t2i_rank_sum", "texts")),
        "t2i_median_rank": Estimate("pooled_median", ("t2i_ranks",)),
    }


def _outputs(ks: tuple[int, ...]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for direction in ("i2t", "t2i"):
        out |= {f"{direction}_recall_at_{k}": True for k in ks}
        out |= {f"{direction}_mean_rank": False, f"{direction}_median_rank": False}
    return out


@register_metric("retrieval", task="retrieval", outputs=_outputs(DEFAULT_KS))
def retrieval(inputs: RetrievalInputs, ks: Sequence[PositiveInt] = DEFAULT_KS) -> MetricResult:
    """Recall@k both ways, mean and median rank; per-sample ranks (i2t per image, t2i per text)."""
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError("ks must be positive integers")
    return retrieval_scores(inputs, ks)
