"""Image-text retrieval metrics with the CLIP / CLIP_benchmark protocol, computed in chunks.

Cosine similarity of L2-normalised embeddings. Image->text (i2t): an image is a hit at k when
any of its captions is among the k most similar texts. Text->image (t2i): a text is a hit at k
when its image is among the k most similar images. Ranks are 1-based. Similarities are ranked
after rounding to ``ranking.SCORE_DECIMALS`` (5) decimals (``ranking.rounded_scores``) and ties
are broken by index (the order a stable descending sort gives), so results are deterministic and
do not change with batch size, shard size or worker count: similarities that differ only by
float noise (~1e-7, what another batch size gives) fall on the same grid point and tie, so the
lower index wins in every run. (Only a pair straddling a rounding boundary can still differ: a
chance of about 2 x noise / 1e-5 per near-tie, some 50 times rarer than without the grid.)

Ranking metrics (``tasks.metrics.ranking`` states the definitions): NDCG@k and mAP@k for every
configured k, and MRR over the full ranking, both ways, with binary relevance (i2t: all of an
image's captions are relevant; t2i: only the text's own image). t2i values follow from the rank
of the one relevant image; i2t values need the positions of all of an image's captions among the
first ``max(ks)`` texts, which come from the same similarity blocks as the ranks: a cheap lower
bound of each row's ``max(ks)``-th largest similarity (the ``max(ks)``-th largest of a sample of
the columns: one run of ``RUN`` adjacent columns in every ``SUBSAMPLE``) keeps a few candidates
per row, which are sorted exactly (descending similarity, then index). Every text more similar
than a candidate is itself a candidate, so the positions are exact, ties included; a row whose
bound keeps more than ``CANDIDATES_PER_DEPTH * max(ks)`` candidates uses its exact ``max(ks)``-th
largest similarity instead.

Memory stays bounded: similarities are computed for blocks of ``BLOCK_BYTES`` (rows of queries
at a time) and each row's rank is a count of strictly better candidates, so no texts x k x images
one-hot and no images x texts matrix is ever built. Memory-mapped embeddings (``np.load(...,
mmap_mode="r")``) are read in row blocks for the validity check; the normalised copies the
scoring uses are the size of the inputs (O((images + texts) x d)), and the per-sample outputs
O(images x max(ks) + texts).

On a GPU (``RetrievalInputs.scoring_device``, which the retrieval kind sets to the model's
device when that is a CUDA device) the same blocks are scored by ``_similarity_torch``: both
normalised matrices moved to the device once, float32 similarities (no half precision, no TF32)
rounded on the same grid, ranks counted on the device and only each row's top candidates moved
back; the results are those of the numpy path (the float-noise caveat above aside).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import PositiveInt

from tasks.arrays import l2_normalize
from tasks.metrics import ranking
from tasks.metrics.base import MetricResult, register_metric
from tasks.stats.estimates import Estimate, mean

DEFAULT_KS = (1, 5, 10)
# Target size of one similarity block in bytes (float32); bounds peak memory.
BLOCK_BYTES = 64 * 1024 * 1024
# One run of RUN adjacent texts (a 64-byte cache line of float32) in every SUBSAMPLE bounds a
# row's max(ks)-th largest similarity from below (i2t ranking metrics); a row keeping more than
# CANDIDATES_PER_DEPTH * max(ks) candidates uses the exact one.
RUN = 16
SUBSAMPLE = 16
CANDIDATES_PER_DEPTH = 64


@dataclass
class RetrievalInputs:
    image_embeddings: np.ndarray  # (n_images, d)
    text_embeddings: np.ndarray  # (n_texts, d)
    text_to_image: np.ndarray  # (n_texts,) image row of each text
    # torch device that scores the similarities (e.g. "cuda"); None: numpy on the CPU
    scoring_device: str | None = None

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
            if not _all_finite(array):
                raise ValueError(f"{name} embeddings contain NaN or infinite values")


def _all_finite(array: np.ndarray) -> bool:
    """``np.isfinite(array).all()`` in row blocks (no full-size mask of a memory-mapped array)."""
    step = _rows_per_block(array.shape[1])
    return all(np.isfinite(array[start:start + step]).all()
               for start in range(0, len(array), step))


def _rows_per_block(columns: int) -> int:
    return max(1, BLOCK_BYTES // (4 * max(columns, 1)))


def text_to_image_ranks(
    images: np.ndarray, texts: np.ndarray, text_to_image: np.ndarray
) -> np.ndarray:
    """1-based rank of each text's own image among all images (inputs already normalised;
    similarities rounded by ``ranking.rounded_scores``, ties to the lower image index)."""
    ranks = np.empty(len(texts), dtype=np.int64)
    columns = np.arange(len(images))
    step = _rows_per_block(len(images))
    for start in range(0, len(texts), step):
        stop = min(start + step, len(texts))
        sims = ranking.rounded_scores(texts[start:stop] @ images.T, inplace=True)
        target = text_to_image[start:stop]
        positive = sims[np.arange(stop - start), target][:, None]
        better = (sims > positive) | ((sims == positive) & (columns[None, :] < target[:, None]))
        ranks[start:stop] = better.sum(axis=1) + 1
    return ranks


def image_to_text_ranks(
    images: np.ndarray, texts: np.ndarray, text_to_image: np.ndarray
) -> np.ndarray:
    """1-based rank of each image's best-ranked caption among all texts; 0 if it has none."""
    return image_to_text_rankings(images, texts, text_to_image, 0)[0]


def image_to_text_rankings(
    images: np.ndarray, texts: np.ndarray, text_to_image: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """``image_to_text_ranks`` and, from the same similarity blocks, the relevance of each
    image's first ``depth`` texts ((images, depth) bool: whether the text at 1-based position r
    is one of the image's captions; ``tasks.metrics.ranking``)."""
    ranks = np.zeros(len(images), dtype=np.int64)
    relevance = np.zeros((len(images), depth), dtype=bool)
    order = np.argsort(text_to_image, kind="stable")  # texts grouped by image, index order kept
    owners = text_to_image[order]
    step = _rows_per_block(len(texts))
    for start in range(0, len(images), step):
        stop = min(start + step, len(images))
        lo, hi = np.searchsorted(owners, [start, stop])
        if lo == hi:
            continue
        sims = ranking.rounded_scores(images[start:stop] @ texts.T, inplace=True)
        ranks[start:stop] = _best_caption_ranks(sims, order[lo:hi], owners[lo:hi] - start)
        if depth:
            relevance[start:stop] = top_relevance(sims, text_to_image - start, depth)
    return ranks, relevance


def _best_caption_ranks(sims: np.ndarray, pos_text: np.ndarray, pos_image: np.ndarray
                        ) -> np.ndarray:
    """Rank of each block row's best caption (0 without captions); ``pos_text`` /
    ``pos_image``: the block's (text, row) positive pairs."""
    columns = np.arange(sims.shape[1])
    pos_sims = sims[pos_image, pos_text]
    # best positive per image; among equal sims, the lowest text index (stable order)
    best_sim = np.full(len(sims), -np.inf, dtype=sims.dtype)
    np.maximum.at(best_sim, pos_image, pos_sims)
    is_best = pos_sims == best_sim[pos_image]
    best_text = np.full(len(sims), sims.shape[1], dtype=np.int64)
    np.minimum.at(best_text, pos_image[is_best], pos_text[is_best])
    has = best_text < sims.shape[1]
    better = (sims > best_sim[:, None]) | (
        (sims == best_sim[:, None]) & (columns[None, :] < best_text[:, None])
    )
    return np.where(has, better.sum(axis=1) + 1, 0)


def top_relevance(sims: np.ndarray, owner_row: np.ndarray, depth: int) -> np.ndarray:
    """(rows, depth) bool: whether the column at each row's 1-based position r (descending
    similarity, ties by lower column index) is relevant, i.e. ``owner_row[column] == row``."""
    rows, cols = _candidates(sims, depth)
    order = np.lexsort((cols, -sims[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)  # 0-based, within the row
    shown = position < depth
    relevance = np.zeros((len(sims), depth), dtype=bool)
    relevance[rows[shown], position[shown]] = owner_row[cols[shown]] == rows[shown]
    return relevance


def _candidates(sims: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every entry at least a lower bound of its row's ``depth``-th largest
    value: that of the sampled columns, or the exact one in a row where the cheap bound keeps
    more than ``CANDIDATES_PER_DEPTH * depth`` columns. Only exact ties at the ``depth``-th
    value can keep more (a gallery of identical texts keeps every column)."""
    n = sims.shape[1]
    sample = np.flatnonzero((np.arange(n) // RUN) % SUBSAMPLE == 0)
    keep = sims >= _kth_largest(np.take(sims, sample, axis=1), depth)[:, None]
    crowded = np.flatnonzero(np.count_nonzero(keep, axis=1) > CANDIDATES_PER_DEPTH * depth)
    if len(crowded):
        keep[crowded] = sims[crowded] >= _kth_largest(sims[crowded], depth)[:, None]
    rows, cols = np.divmod(np.flatnonzero(keep), n)  # row-major: columns ascend in a row
    return rows, cols


def _kth_largest(values: np.ndarray, k: int) -> np.ndarray:
    """Per row, its ``k``-th largest value (-inf when the row is shorter than k)."""
    n = values.shape[1]
    if n < k:
        return np.full(len(values), -np.inf, dtype=values.dtype)
    return np.partition(values, n - k, axis=1)[:, n - k].copy()


def summarize_ranks(prefix: str, ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    if len(ranks) == 0:
        return {}
    out = {f"{prefix}_recall_at_{k}": float(np.mean(ranks <= k)) for k in ks}
    out[f"{prefix}_mean_rank"] = float(np.mean(ranks))
    out[f"{prefix}_median_rank"] = float(np.median(ranks))
    return out


def retrieval_scores(inputs: RetrievalInputs, ks: tuple[int, ...] = DEFAULT_KS) -> MetricResult:
    t2i, i2t, relevance = rankings(inputs, max(ks))
    without_text = int((i2t == 0).sum())
    corpus = summarize_ranks("i2t", i2t[i2t > 0], ks) | summarize_ranks("t2i", t2i, ks)
    extra: dict[str, Any] = {"images": len(i2t), "texts": len(t2i)}
    if without_text:
        extra["warnings"] = [f"{without_text} image(s) have no caption and are left out of i2t"]
    per_image = image_statistics(i2t, t2i, inputs.text_to_image, ks)
    ranked = ranking_statistics(i2t, relevance, t2i, inputs.text_to_image, ks)
    corpus |= summarize_ranking(ranked, per_image["texts"], ks)
    return MetricResult(corpus=corpus,
                        per_sample={"i2t_rank": i2t, "t2i_rank": t2i} | per_image | ranked,
                        extra=extra, estimates=retrieval_estimates(ks) | ranking_estimates(ks))


def rankings(inputs: RetrievalInputs, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t2i ranks, i2t ranks and the i2t relevance of each image's first ``depth`` texts, of
    the normalised embeddings: with numpy, or on ``inputs.scoring_device`` when it is set."""
    images = l2_normalize(inputs.image_embeddings)
    texts = l2_normalize(inputs.text_embeddings)
    if inputs.scoring_device is not None:
        from tasks.metrics._similarity_torch import device_rankings

        return device_rankings(images, texts, inputs.text_to_image, depth,
                               inputs.scoring_device, _rows_per_block)
    t2i = text_to_image_ranks(images, texts, inputs.text_to_image)
    return (t2i, *image_to_text_rankings(images, texts, inputs.text_to_image, depth))


def ranking_statistics(i2t: np.ndarray, relevance: np.ndarray, t2i: np.ndarray,
                       text_to_image: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per-image columns of the ranking metrics (``tasks.metrics.ranking``): the image's own
    i2t values ``i2t_ndcg_at_<k>``, ``i2t_ap_at_<k>``, ``i2t_rr`` (NaN without captions), and
    the sums of its captions' t2i values ``t2i_ndcg_sum_at_<k>``, ``t2i_ap_sum_at_<k>``,
    ``t2i_rr_sum`` (divided by ``texts`` for the t2i means with images as the unit)."""
    n = len(i2t)
    captions = np.bincount(text_to_image, minlength=n)
    images = ranking.query_values(relevance, captions, i2t, ks)
    texts = ranking.query_values(ranking.single_relevance(t2i, max(ks)), np.ones_like(t2i),
                                 t2i, ks)
    out = {f"i2t_{key}": value for key, value in images.items()}
    for key, value in texts.items():
        name = "t2i_rr_sum" if key == "rr" else "t2i_" + key.replace("_at_", "_sum_at_")
        out[name] = np.bincount(text_to_image, weights=value, minlength=n)
    return out


def summarize_ranking(ranked: dict[str, np.ndarray], texts: np.ndarray, ks: tuple[int, ...]
                      ) -> dict[str, float]:
    """Corpus NDCG@k, mAP@k and MRR both ways: i2t over images with captions, t2i over texts."""
    out: dict[str, float] = {}
    with_text = texts > 0
    if with_text.any():
        for k in ks:
            out[f"i2t_ndcg_at_{k}"] = float(np.mean(ranked[f"i2t_ndcg_at_{k}"][with_text]))
            out[f"i2t_map_at_{k}"] = float(np.mean(ranked[f"i2t_ap_at_{k}"][with_text]))
        out["i2t_mrr"] = float(np.mean(ranked["i2t_rr"][with_text]))
        total = texts.sum()
        for k in ks:
            out[f"t2i_ndcg_at_{k}"] = float(ranked[f"t2i_ndcg_sum_at_{k}"].sum() / total)
            out[f"t2i_map_at_{k}"] = float(ranked[f"t2i_ap_sum_at_{k}"].sum() / total)
        out["t2i_mrr"] = float(ranked["t2i_rr_sum"].sum() / total)
    return out


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


def ranking_estimates(ks: tuple[int, ...]) -> dict[str, Estimate]:
    """As ``retrieval_estimates``: i2t values are means of per-image columns, t2i values ratios
    of per-image sums over the image's captions to its caption count."""
    estimates: dict[str, Estimate] = {}
    for k in ks:
        estimates[f"i2t_ndcg_at_{k}"] = mean(f"i2t_ndcg_at_{k}")
        estimates[f"i2t_map_at_{k}"] = mean(f"i2t_ap_at_{k}")
        estimates[f"t2i_ndcg_at_{k}"] = Estimate("ratio", (f"t2i_ndcg_sum_at_{k}", "texts"))
        estimates[f"t2i_map_at_{k}"] = Estimate("ratio", (f"t2i_ap_sum_at_{k}", "texts"))
    return estimates | {"i2t_mrr": mean("i2t_rr"),
                        "t2i_mrr": Estimate("ratio", ("t2i_rr_sum", "texts"))}


def _outputs(ks: tuple[int, ...]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for direction in ("i2t", "t2i"):
        out |= {f"{direction}_recall_at_{k}": True for k in ks}
        out |= {f"{direction}_mean_rank": False, f"{direction}_median_rank": False}
        out |= {f"{direction}_{name}_at_{k}": True for name in ("ndcg", "map") for k in ks}
        out[f"{direction}_mrr"] = True
    return out


@register_metric("retrieval", task="retrieval", outputs=_outputs(DEFAULT_KS))
def retrieval(inputs: RetrievalInputs, ks: Sequence[PositiveInt] = DEFAULT_KS) -> MetricResult:
    """Recall@k, NDCG@k, mAP@k and MRR both ways, mean and median rank; per-sample ranks.

    Per sample: ranks (i2t per image, t2i per text) and per-image columns of every metric."""
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError("ks must be positive integers")
    return retrieval_scores(inputs, ks)
