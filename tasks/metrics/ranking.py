"""Ranking metrics of retrieval (NDCG@k, AP@k, reciprocal rank) from the top of each ranking.

Binary relevance. Image->text (i2t): the query is an image and every one of its captions is
relevant (``R`` = its number of captions). Text->image (t2i): the query is a text and only its
own image is relevant (``R = 1``). Rankings are those of ``tasks.metrics.retrieval``: by
descending cosine similarity rounded to ``SCORE_DECIMALS`` decimals (``rounded_scores``), ties
broken by index (the lower index ranks first), so a tie is resolved as if the lower index were
slightly more similar. The rounding makes rankings invariant to float noise: embeddings computed
with another batch size, shard size or worker count differ in the last bits (~1e-7), which would
otherwise flip near-ties. (scikit-learn's ``ndcg_score`` and
torchmetrics' ``RetrievalNormalizedDCG`` average the gain over tied candidates instead: the
values agree whenever no tie straddles a relevant item's position.)

A query's ranking enters as ``relevance`` (queries x depth, bool): whether the item at
1-based position ``r`` is relevant, for ``r = 1..depth`` (``depth`` = the largest k); positions
past the gallery are not relevant. With ``rel_r`` that flag and ``k`` one of the configured ks:

* ``NDCG@k = DCG@k / IDCG@k``, ``DCG@k = sum_{r<=k} rel_r / log2(r + 1)``, and ``IDCG@k`` the
  DCG of an ideal ranking: ``sum_{r <= min(R, k)} 1 / log2(r + 1)`` (as sklearn / torchmetrics);
* ``AP@k = sum_{r<=k} rel_r * P@r / min(R, k)`` with ``P@r`` the share of relevant items among
  the first ``r``: normalised by ``min(R, k)``, the most relevant items the first k can hold, so
  an image whose only caption in the top 10 is at rank 1 of its 5 scores 1/5, not 1. This is
  torchmetrics' ``RetrievalMAP(top_k=k)`` times (relevant items in the top k) / ``min(R, k)``:
  torchmetrics divides by the relevant items it retrieved. The two agree when R = 1 (t2i) and
  when the top k holds ``min(R, k)`` relevant items;
* ``RR = 1 / rank`` of the best-ranked relevant item over the full ranking (no cut-off), whose
  mean over queries is MRR.

mAP@k and MRR are means of the per-query AP@k and RR; a query with no relevant item (an image
without captions) has no value (NaN) and is left out, as for recall.
"""

from __future__ import annotations

import numpy as np

# Similarities are ranked on a grid of 10**-SCORE_DECIMALS (cosines lie in [-1, 1]).
SCORE_DECIMALS = 5
_SCALE = np.float32(10.0**SCORE_DECIMALS)


def rounded_scores(scores: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """Scores as integers on the ranking grid: ``rint(scores * 10**SCORE_DECIMALS)`` (half to
    even), in ``scores``' float dtype, so order and ties are those of the scores rounded to
    ``SCORE_DECIMALS`` decimals. Two scores that differ by float noise (~1e-7) get the same value
    unless a rounding boundary lies between them (then they differ by one grid step, as the
    same two scores would in any run). ``inplace`` overwrites ``scores`` (a block one owns)."""
    out = scores if inplace else None
    scaled = np.multiply(scores, _SCALE, out=out)
    return np.rint(scaled, out=scaled)


def discounts(depth: int) -> np.ndarray:
    """``1 / log2(r + 1)`` for positions ``r = 1..depth``."""
    return 1.0 / np.log2(np.arange(2, depth + 2, dtype=np.float64))


def ndcg_at(relevance: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k per query (NaN where ``relevant`` is 0)."""
    k = min(k, relevance.shape[1])
    gains = discounts(k)
    dcg = relevance[:, :k] @ gains
    ideal = np.concatenate([[0.0], np.cumsum(gains)])[np.minimum(relevant, k)]
    return _divide(dcg, ideal)


def average_precision_at(relevance: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k per query, normalised by ``min(relevant, k)`` (NaN where ``relevant`` is 0)."""
    k = min(k, relevance.shape[1])
    top = relevance[:, :k].astype(np.float64)
    precision = np.cumsum(top, axis=1) / np.arange(1, k + 1)
    return _divide((top * precision).sum(axis=1), np.minimum(relevant, k))


def reciprocal_rank(ranks: np.ndarray) -> np.ndarray:
    """``1 / rank`` per query; NaN where the rank is 0 (no relevant item)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return _divide(np.ones_like(ranks), ranks)


def single_relevance(ranks: np.ndarray, depth: int) -> np.ndarray:
    """``relevance`` of queries with one relevant item at 1-based ``ranks`` (t2i)."""
    relevance = np.zeros((len(ranks), depth), dtype=bool)
    shown = (ranks >= 1) & (ranks <= depth)
    relevance[np.flatnonzero(shown), ranks[shown] - 1] = True
    return relevance


def query_values(relevance: np.ndarray, relevant: np.ndarray, ranks: np.ndarray,
                 ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per query: ``ndcg_at_<k>`` and ``ap_at_<k>`` for every k, and ``rr`` (reciprocal rank;
    ``ranks``: the best relevant item's full-ranking rank)."""
    relevant = np.asarray(relevant, dtype=np.int64)
    out = {f"ndcg_at_{k}": ndcg_at(relevance, relevant, k) for k in ks}
    out |= {f"ap_at_{k}": average_precision_at(relevance, relevant, k) for k in ks}
    out["rr"] = reciprocal_rank(ranks)
    return out


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.full_like(numerator, np.nan),
                     where=np.asarray(denominator) > 0)
