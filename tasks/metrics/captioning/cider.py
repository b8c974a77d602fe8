"""CIDEr-D exactly as coco-caption's ``Cider().compute_score`` (``CiderScorer``, n=4, sigma=6).

For every n-gram order n = 1..4 each caption becomes a tf-idf vector: term frequency times
``log(N) - log(max(1, df))``, where ``N`` is the number of images and ``df`` the number of images
whose references contain the n-gram (document frequencies come from the evaluated references,
as in coco-caption). A prediction is compared with each of its references by

    sum_g min(v_pred[g], v_ref[g]) * v_ref[g] / (|v_pred| |v_ref|)        (clipped cosine)

(not divided when a norm is 0), times the length penalty ``exp(-delta**2 / (2 * sigma**2))``.
coco-caption's "length" is the number of *bigrams* (``max(words - 1, 0)``), which we keep. The
sample score is ``10 * mean over n of (sum over references) / #references``; the corpus score is
the mean over samples.

With fewer than two images ``log(N) = 0`` makes every weight zero (coco-caption silently
returns 0), so :func:`cider_score` raises a ``ValueError`` instead.
"""

from __future__ import annotations

import numpy as np

from tasks.metrics.base import MetricResult, register_metric
from tasks.metrics.captioning.inputs import CaptionInputs, NgramCounts, NgramTables
from tasks.stats.estimates import mean

SIGMA = 6.0
N_ORDERS = 4


def _order_similarity(counts: NgramCounts, tables: NgramTables, log_images: float) -> np.ndarray:
    """Clipped cosine similarity of every reference with its sample's prediction, one order."""
    n_grams = counts.n_grams
    ref_sample = tables.ref_sample[counts.ref_caption]
    # Document frequency: in how many images' references an n-gram occurs.
    df = np.bincount(counts.image_key % n_grams, minlength=n_grams).astype(np.float64)
    weight = log_images - np.log(np.maximum(1.0, df))
    ref_vec = counts.ref_count * weight[counts.ref_gram]
    pred_vec = counts.pred_count * weight[counts.pred_gram]
    n_refs, n_samples = len(tables.ref_length), len(tables.pred_length)
    ref_norm = np.sqrt(np.bincount(counts.ref_caption, weights=ref_vec**2, minlength=n_refs))
    pred_norm = np.sqrt(np.bincount(counts.pred_sample, weights=pred_vec**2, minlength=n_samples))
    # Join each reference n-gram with the same n-gram of the sample's prediction.
    pred_keys = counts.pred_sample * n_grams + counts.pred_gram  # sorted
    ref_keys = ref_sample * n_grams + counts.ref_gram
    overlap = np.zeros(len(ref_keys))
    if len(pred_keys):
        where = np.minimum(np.searchsorted(pred_keys, ref_keys), len(pred_keys) - 1)
        found = pred_keys[where] == ref_keys
        overlap = np.where(found, np.minimum(pred_vec[where], ref_vec) * ref_vec, 0.0)
    value = np.bincount(counts.ref_caption, weights=overlap, minlength=n_refs)
    norms = pred_norm[tables.ref_sample] * ref_norm
    return np.where(norms != 0, value / np.where(norms != 0, norms, 1.0), value)


def cider_d(inputs: CaptionInputs, sigma: float = SIGMA) -> tuple[float, np.ndarray]:
    """(corpus CIDEr-D, per-sample CIDEr-D) as coco-caption."""
    n_samples = len(inputs)
    if n_samples < 2:
        raise ValueError(
            f"CIDEr-D needs at least 2 images (its idf weights are log(#images) - log(df), all 0 "
            f"for one image), got {n_samples}"
        )
    tables = inputs.ngrams()
    log_images = float(np.log(float(n_samples)))
    similarity = np.stack(
        [_order_similarity(tables.orders[k], tables, log_images) for k in range(N_ORDERS)], axis=1
    )
    # coco-caption's "length" counts bigrams.
    pred_bigrams = np.maximum(tables.pred_length - 1, 0)
    ref_bigrams = np.maximum(tables.ref_length - 1, 0)
    delta = (pred_bigrams[tables.ref_sample] - ref_bigrams).astype(np.float64)
    similarity *= (np.e ** (-(delta**2) / (2 * sigma**2)))[:, None]
    # Sum over each sample's references (contiguous, in order), then mean over the n orders.
    starts = np.concatenate(([0], np.cumsum(np.bincount(tables.ref_sample, minlength=n_samples))))
    per_order = np.add.reduceat(similarity, starts[:-1], axis=0)
    n_refs = np.diff(starts).astype(np.float64)
    scores = per_order.mean(axis=1) / n_refs * 10.0
    return float(np.mean(scores)), scores


@register_metric(
    "cider",
    task="captioning",
    outputs={"cider": True},
    description="CIDEr-D as coco-caption (n=4, sigma=6, idf from the evaluated references)",
)
def cider_score(inputs: CaptionInputs, sigma: float = SIGMA) -> MetricResult:
    """CIDEr-D as coco-caption (n=4, sigma=6, idf from the evaluated references).

    Raises ``ValueError`` for fewer than 2 images (the idf weights would all be zero).
    """
    corpus, per_sample = cider_d(inputs, sigma=sigma)
    # CIDEr-D is the mean of per-image scores; the corpus document frequencies are held fixed
    # when resampling (recomputing them per resample would change every image's score)
    return MetricResult(corpus={"cider": corpus}, per_sample={"cider": per_sample},
                        estimates={"cider": mean("cider")})
