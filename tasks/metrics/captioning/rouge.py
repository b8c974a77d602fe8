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
    # One pass over the predictions' positions, all pairs at once.
    width = np.minimum(ref_len, _WORD_BITS).astype(np.uint64)
    full = np.where(width == _WORD_BITS, np.uint64(2**64 - 1),
                    (np.uint64(1) << np.minimum(width, 63)) - np.uint64(1))
    v = full.copy()
    pred_start = np.cumsum(pred_len) - pred_len
    steps = pred_len[pair_pred]
    for j in range(int(steps.max(initial=0))):
        active = np.nonzero(steps > j)[0]
        word_keys = active * vocab_size + pred_ids[pred_start[pair_pred[active]] + j]
        where = np.minimum(np.searchsorted(unique_keys, word_keys), max(len(unique_keys) - 1, 0))
        hit = unique_keys[where] == word_keys if len(unique_keys) else np.zeros(len(active), bool)
        m = np.where(hit, masks[where] if len(masks) else np.uint64(0), np.uint64(0))
        u = v[active] & m
        v[active] = ((v[active] + u) | (v[active] - u)) & full[active]
    ones = np.bitwise_count(v) if hasattr(np, "bitwise_count") else np.array(
        [int(x).bit_count() for x in v], dtype=np.int64)
    lcs = ref_len - ones.astype(np.int64)
    for p in np.nonzero(ref_len > _WORD_BITS)[0]:  # rare: references longer than 64 tokens
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
