"""ROUGE-L exactly as coco-caption's ``Rouge().compute_score`` (beta = 1.2).

Per sample: with ``lcs`` the longest common subsequence of prediction and reference tokens
(``split(" ")`` of the tokenised captions, so an empty caption is one empty token, as in
coco-caption), ``P = max_ref lcs / len(pred)`` and ``R = max_ref lcs / len(ref)`` (maximised
separately over the references) give ``(1 + beta^2) P R / (R + beta^2 P)``, or 0 when P or R
is 0. The corpus value is the mean over samples.

LCS lengths use the bit-parallel algorithm of Allison & Dix / Hyyro: the positions of every
reference word form a bit mask, and one pass over the prediction updates a bit vector with a
few integer operations per word, for all (prediction, reference) pairs at once in numpy
(references up to 64 tokens; longer ones use Python integers).
"""

from __future__ import annotations

import numpy as np

from tasks.metrics.base import MetricResult, register_metric
from tasks.metrics.captioning.inputs import CaptionInputs, word_ids

BETA = 1.2
_WORD_BITS = 64
_MAX_STEPS = 128  # prediction tokens handled in numpy (bounds the pair x position matrix)


def _lcs_python(ref: list[str], pred: list[str]) -> int:
    masks: dict[str, int] = {}
    for position, word in enumerate(ref):
        masks[word] = masks.get(word, 0) | (1 << position)
    v = (1 << len(ref)) - 1
    for word in pred:
        u = v & masks.get(word, 0)
        v = (v + u) | (v - u)
    return len(ref) - (v & ((1 << len(ref)) - 1)).bit_count()


def lcs_lengths(refs: list[list[str]], preds: list[list[str]], pair_pred: np.ndarray) -> np.ndarray:
    """LCS length of every reference ``refs[p]`` with prediction ``preds[pair_pred[p]]``."""
    ids, lengths, vocab_size = word_ids(refs + preds)
    n_pairs = len(refs)
    ref_len, pred_len = lengths[:n_pairs], lengths[n_pairs:]
    split = int(ref_len.sum())
    ref_ids, pred_ids = ids[:split], ids[split:]
    # Bit masks: for every (reference, word) the positions of the word in the reference.
    owner = np.repeat(np.arange(n_pairs), ref_len)
    position = np.arange(len(ref_ids)) - np.repeat(np.cumsum(ref_len) - ref_len, ref_len)
    short = position < _WORD_BITS
    keys = owner[short] * vocab_size + ref_ids[short]
    order = np.argsort(keys)
    keys = keys[order]
    bits = np.left_shift(np.uint64(1), position[short][order].astype(np.uint64))
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    starts = np.nonzero(first)[0]
    unique_keys = keys[starts]
    masks = np.bitwise_or.reduceat(bits, starts) if len(bits) else bits
    # Masks of the prediction words, a (pair x position) matrix with 0 past the prediction's end
    # (a zero mask leaves the bit vector unchanged).
    steps = np.minimum(pred_len[pair_pred], _MAX_STEPS)
    pair = np.repeat(np.arange(n_pairs), steps)
    step = np.arange(len(pair)) - np.repeat(np.cumsum(steps) - steps, steps)
    word_keys = pair * vocab_size + pred_ids[(np.cumsum(pred_len) - pred_len)[pair_pred[pair]] + step]
    matrix = np.zeros((n_pairs, int(steps.max(initial=0))), dtype=np.uint64)
    if len(unique_keys):
        where = np.minimum(np.searchsorted(unique_keys, word_keys), len(unique_keys) - 1)
        matrix[pair, step] = np.where(unique_keys[where] == word_keys, masks[where], np.uint64(0))
    width = np.minimum(ref_len, _WORD_BITS).astype(np.uint64)
    full = np.where(width == _WORD_BITS, np.uint64(2**64 - 1),
                    (np.uint64(1) << np.minimum(width, 63)) - np.uint64(1))
    v = full.copy()
    for column in matrix.T:
        u = v & column
        v = ((v + u) | (v - u)) & full
    ones = np.bitwise_count(v) if hasattr(np, "bitwise_count") else np.array(
        [int(x).bit_count() for x in v], dtype=np.int64)
    lcs = ref_len - ones.astype(np.int64)
    # Rare: references longer than 64 tokens or predictions longer than _MAX_STEPS tokens.
    for p in np.nonzero((ref_len > _WORD_BITS) | (pred_len[pair_pred] > _MAX_STEPS))[0]:
        lcs[p] = _lcs_python(refs[p], preds[pair_pred[p]])
    return lcs


def rouge_l_scores(inputs: CaptionInputs, beta: float = BETA) -> tuple[float, np.ndarray]:
    """(corpus ROUGE-L, per-sample ROUGE-L) as coco-caption."""
    tokens = inputs.tokenized()
    preds = [pred.split(" ") for pred in tokens.predictions]
    refs = [ref.split(" ") for group in tokens.references for ref in group]
    counts = np.array([len(group) for group in tokens.references], dtype=np.int64)
    pair_pred = np.repeat(np.arange(len(preds)), counts)
    lcs = lcs_lengths(refs, preds, pair_pred).astype(np.float64)
    pred_len = np.array([len(p) for p in preds], dtype=np.float64)
    ref_len = np.array([len(r) for r in refs], dtype=np.float64)
    starts = np.cumsum(counts) - counts
    prec = np.maximum.reduceat(lcs / pred_len[pair_pred], starts)
    rec = np.maximum.reduceat(lcs / ref_len, starts)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = ((1 + beta**2) * prec * rec) / (rec + beta**2 * prec)
    scores = np.where((prec != 0) & (rec != 0), scores, 0.0)
    return float(np.mean(scores)), scores


@register_metric(
    "rouge_l",
    task="captioning",
    outputs={"rouge_l": True},
    description="ROUGE-L (LCS F-measure, beta=1.2) as coco-caption",
)
def rouge_l_score(inputs: CaptionInputs) -> MetricResult:
    """ROUGE-L (LCS F-measure, beta=1.2) as coco-caption."""
    corpus, per_sample = rouge_l_scores(inputs)
    return MetricResult(corpus={"rouge_l": corpus}, per_sample={"rouge_l": per_sample})
