"""Retrieval scoring on a torch device: ``tasks.metrics.retrieval``'s protocol, same results.

The caller L2-normalises the embeddings (float32, as the numpy path does); they are moved to
``device`` once and similarities are computed there in float32 (never half precision, and with
TF32 off: ``full_float32``), rounded on the same grid (``rint(x * 10**SCORE_DECIMALS)``, half
to even: ``torch.round``) and ranked with ties to the lower index. Queries go in blocks of
``rows_per_block(gallery size)`` rows (the numpy path's ``BLOCK_BYTES`` blocks), so device
memory is the two embedding matrices plus a few blocks. A rank is 1 + a count of better entries
(greater, or equal at a lower index), computed on the device. A row's first ``depth`` entries
(NDCG / mAP relevance, the report's top captions) are among those at least its exact
``depth``-th largest value (``torch.topk`` values, which are deterministic where its indices
are not); only those (row, column, value) candidates move to the CPU, where numpy orders them
(descending value, then lower column). On CPU torch every result equals the numpy path's
wherever both compute the same similarities: BLAS libraries may sum in another order, float
noise that the grid turns into ties unless a pair straddles a grid boundary.

This module imports torch, so the metric registry (which imports every module of
``tasks.metrics`` whose name does not start with "_") never loads it; callers import it only
when a device is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from tasks.metrics.ranking import SCORE_DECIMALS

SCALE = 10.0**SCORE_DECIMALS  # exact in float32, as ``ranking._SCALE``


@contextmanager
def full_float32() -> Iterator[None]:
    """CUDA float32 matmuls at full (IEEE) precision inside the block, the caller's setting
    restored after: TF32 keeps ~10 mantissa bits (~1e-3), far coarser than the 1e-5 grid."""
    matmul = torch.backends.cuda.matmul
    name, full = ("fp32_precision", "ieee") if hasattr(matmul, "fp32_precision") else (
        "allow_tf32", False)
    before = getattr(matmul, name)
    setattr(matmul, name, full)
    try:
        yield
    finally:
        setattr(matmul, name, before)


def to_device(array: np.ndarray, device: str | torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def rounded(sims: torch.Tensor) -> torch.Tensor:
    """``ranking.rounded_scores`` in place: ``round(sims * 10**SCORE_DECIMALS)`` in float32."""
    return sims.mul_(SCALE).round_()


def device_rankings(images: np.ndarray, texts: np.ndarray, text_to_image: np.ndarray,
                    depth: int, device: str, rows_per_block: Callable[[int], int]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``retrieval.text_to_image_ranks`` and ``retrieval.image_to_text_rankings`` (normalised
    inputs) on ``device``: (t2i ranks, i2t ranks, i2t relevance of the first ``depth`` texts)."""
    with full_float32(), torch.inference_mode():
        image_rows, text_rows = to_device(images, device), to_device(texts, device)
        owner = to_device(text_to_image, device)
        t2i = text_to_image_ranks(image_rows, text_rows, owner, rows_per_block(len(images)))
        i2t, relevance = image_to_text_rankings(image_rows, text_rows, text_to_image, depth,
                                                rows_per_block(len(texts)))
    return t2i, i2t, relevance


def text_to_image_ranks(images: torch.Tensor, texts: torch.Tensor, text_to_image: torch.Tensor,
                        step: int) -> np.ndarray:
    """1-based rank of each text's own image among all images (rounded similarities, ties to
    the lower image index); ``step`` texts at a time."""
    ranks = torch.empty(len(texts), dtype=torch.int64, device=texts.device)
    for start in range(0, len(texts), step):
        sims = rounded(texts[start:start + step] @ images.T)
        target = text_to_image[start:start + step]
        ranks[start:start + step] = rank_counts(sims, sims.gather(1, target[:, None])[:, 0],
                                                target)
    return ranks.cpu().numpy()


def rank_counts(sims: torch.Tensor, value: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per row, 1 + the number of entries greater than ``value`` or equal to it at a column
    below ``index``: the 1-based rank of the entry ``(row, index)`` of value ``value``."""
    columns = torch.arange(sims.shape[1], device=sims.device)
    value, index = value[:, None], index[:, None]
    return (sims > value).sum(dim=1) + ((sims == value) & (columns < index)).sum(dim=1) + 1


def image_to_text_rankings(images: torch.Tensor, texts: torch.Tensor, text_to_image: np.ndarray,
                           depth: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """1-based rank of each image's best-ranked caption (0 without captions) and the relevance
    of its first ``depth`` texts (``retrieval.image_to_text_rankings``); ``step`` images at a
    time, blocks without a caption skipped."""
    n = len(images)
    ranks = np.zeros(n, dtype=np.int64)
    relevance = np.zeros((n, depth), dtype=bool)
    order = np.argsort(text_to_image, kind="stable")  # texts grouped by image, index order kept
    owners = text_to_image[order]
    for start in range(0, n, step):
        stop = min(start + step, n)
        lo, hi = np.searchsorted(owners, [start, stop])
        if lo == hi:
            continue
        sims = rounded(images[start:stop] @ texts.T)
        ranks[start:stop] = best_caption_ranks(sims, to_device(order[lo:hi], sims.device),
                                               to_device(owners[lo:hi] - start, sims.device))
        if depth:
            relevance[start:stop] = top_relevance(sims, text_to_image - start, depth)
    return ranks, relevance


def best_caption_ranks(sims: torch.Tensor, pos_text: torch.Tensor, pos_row: torch.Tensor
                       ) -> np.ndarray:
    """Rank of each block row's best caption (highest similarity, then lowest text index; 0
    without captions); ``pos_text`` / ``pos_row``: the block's (text, row) positive pairs."""
    rows, n = sims.shape
    pos_sims = sims[pos_row, pos_text]
    best_sim = torch.full((rows,), -torch.inf, dtype=sims.dtype, device=sims.device)
    best_sim = best_sim.scatter_reduce(0, pos_row, pos_sims, reduce="amax")
    is_best = pos_sims == best_sim[pos_row]
    best_text = torch.full((rows,), n, dtype=torch.int64, device=sims.device)
    best_text = best_text.scatter_reduce(0, pos_row[is_best], pos_text[is_best], reduce="amin")
    ranks = torch.where(best_text < n, rank_counts(sims, best_sim, best_text), 0)
    return ranks.cpu().numpy()


def top_relevance(sims: torch.Tensor, owner_row: np.ndarray, depth: int) -> np.ndarray:
    """(rows, depth) bool: whether the column at each row's 1-based position r (descending
    similarity, ties by lower column index) is relevant, i.e. ``owner_row[column] == row``."""
    rows, cols, position = top_entries(sims, depth)
    relevance = np.zeros((len(sims), depth), dtype=bool)
    relevance[rows, position] = owner_row[cols] == rows
    return relevance


def top_entries(sims: torch.Tensor, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, 0-based position) of each row's first ``depth`` entries in descending
    value, ties by lower column: the candidates at least the row's exact ``depth``-th largest
    value (all entries of a row shorter than ``depth``), sorted on the CPU."""
    k = min(depth, sims.shape[1])
    if k == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    keep = sims >= sims.topk(k, dim=1).values[:, -1:]
    rows_t, cols_t = keep.nonzero(as_tuple=True)
    values = sims[rows_t, cols_t].cpu().numpy()
    rows, cols = rows_t.cpu().numpy(), cols_t.cpu().numpy()
    order = np.lexsort((cols, -values, rows))
    rows, cols = rows[order], cols[order]
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)  # 0-based, within the row
    shown = position < depth
    return rows[shown], cols[shown], position[shown]


def caption_ranking(images: np.ndarray, texts: np.ndarray, count: int, step: int, device: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``tasks.kinds.retrieval.score.caption_ranking`` (normalised inputs, raw similarities) on
    ``device``: per image the top-two margin, the most similar text (ties: lower index) and its
    ``count`` most similar texts (most similar first, ties: lower index); ``step`` images at a
    time."""
    if not len(images):
        return np.empty(0), np.empty(0, np.int64), np.empty((0, 0), np.int64)
    margins, top, tops = [], [], []
    with full_float32(), torch.inference_mode():
        queries, gallery = to_device(images, device), to_device(texts, device)
        for start in range(0, len(images), step):
            sims = queries[start:start + step] @ gallery.T
            margins.append(top_two_margin(sims))
            top.append(sims.argmax(dim=1).cpu().numpy() if sims.shape[1]
                       else np.zeros(len(sims), np.int64))
            tops.append(most_similar(sims, count))
    return np.concatenate(margins), np.concatenate(top), np.concatenate(tops)


def top_two_margin(sims: torch.Tensor) -> np.ndarray:
    """Per row, the best value minus the second best (float32 difference, as float64); NaN with
    fewer than two columns."""
    if sims.shape[1] < 2:
        return np.full(len(sims), np.nan)
    best = sims.topk(2, dim=1).values
    return (best[:, 0] - best[:, 1]).cpu().numpy().astype(np.float64)


def most_similar(sims: torch.Tensor, count: int) -> np.ndarray:
    """Per row, the column indices of the ``count`` largest values, largest first (ties: lower
    index first)."""
    count = min(count, sims.shape[1])
    out = np.zeros((len(sims), count), dtype=np.int64)
    rows, cols, position = top_entries(sims, count)
    out[rows, position] = cols
    return out
