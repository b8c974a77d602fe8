"""ROUGE-L exactly as coco-caption's ``Rouge().compute_score`` (beta = 1.2).

Per sample: with ``lcs`` the longest common subsequence of prediction and reference tokens
(``split(" ")`` of the tokenised captions, so an empty caption is one empty token, as in
coco-caption), ``P = max_ref lcs / len(pred)`` and ``R = max_ref lcs / len(ref)`` (maximised
separately over the references) give ``(1 + beta^2) P R / (R + beta^2 P)``, or 0 when P or R
is 0. The corpus value is the mean over samples.

LCS lengths use the bit-parallel algorithm of Allison & Dix / Hyyro: the positions of every
reference word form a bit mask, and one pass over the prediction updates a bit vector with a
few integer operations per word, for all (prediction, reference) pairs at once in numpy
(uint64 masks; pairs with a reference over 64 tokens or a prediction over 128 tokens are done
one by one with Python integers).
"""

from __future__ import annotations

import numpy as np

from tasks.metrics.base import MetricResult, register_metric
from tasks.metrics.captioning.inputs import CaptionInputs, WordTable, require_samples
from tasks.stats.estimates import mean

BETA = 1.2
_WORD_BITS = 64
_MAX_STEPS = 128  # prediction tokens handled in numpy (bounds the pair x position matrix)


def _lcs_python(ref: list[int], pred: list[int]) -> int:
    masks: dict[int, int] = {}
    for position, word in enumerate(ref):
        masks[word] = masks.get(word, 0) | (1 << position)
    v = (1 << len(ref)) - 1
    for word in pred:
        u = v & masks.get(word, 0)
        v = (v + u) | (v - u)
    return len(ref) - (v & ((1 << len(ref)) - 1)).bit_count()


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of every uint64 (``np.bitwise_count`` needs numpy >= 2)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.int64)
    return np.unpackbits(values.view(np.uint8)).reshape(len(values), 64).sum(axis=1)


def _position_masks(
    ids: np.ndarray, lengths: np.ndarray, vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys ``caption * vocab_size + word`` and the bit mask of the word's positions in
    the caption (first 64 positions)."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    short = position < _WORD_BITS
    keys = owner[short] * vocab_size + ids[short]
    order = np.argsort(keys)
    keys = keys[order]
    bits = np.left_shift(np.uint64(1), position[short][order].astype(np.uint64))
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    starts = np.nonzero(first)[0]
    return keys[starts], (np.bitwise_or.reduceat(bits, starts) if len(bits) else bits)


def lcs_lengths(words: WordTable, pair_pred: np.ndarray) -> np.ndarray:
    """LCS length of every reference ``p`` with prediction ``pair_pred[p]`` (word ids)."""
    n_pairs = words.n_refs
    ref_len, pred_len = words.lengths[:n_pairs], words.lengths[n_pairs:]
    split = int(ref_len.sum())
    ref_ids, pred_ids = words.ids[:split], words.ids[split:]
    keys, masks = _position_masks(ref_ids, ref_len, words.vocab_size)
    # Masks of the prediction words, a (pair x position) matrix with 0 past the prediction's end
    # (a zero mask leaves the bit vector unchanged).
    steps = np.minimum(pred_len[pair_pred], _MAX_STEPS)
    pair = np.repeat(np.arange(n_pairs), steps)
    step = np.arange(len(pair)) - np.repeat(np.cumsum(steps) - steps, steps)
    pred_start = np.cumsum(pred_len) - pred_len
    word_keys = pair * words.vocab_size + pred_ids[pred_start[pair_pred[pair]] + step]
    matrix = np.zeros((n_pairs, int(steps.max(initial=0))), dtype=np.uint64)
    if len(keys):
        where = np.minimum(np.searchsorted(keys, word_keys), len(keys) - 1)
        matrix[pair, step] = np.where(keys[where] == word_keys, masks[where], np.uint64(0))
    width = np.minimum(ref_len, _WORD_BITS).astype(np.uint64)
    full = np.where(width == _WORD_BITS, np.uint64(2**64 - 1),
                    (np.uint64(1) << np.minimum(width, 63)) - np.uint64(1))
    v = full.copy()
    for column in matrix.T:
        u = v & column
        v = ((v + u) | (v - u)) & full
    lcs = ref_len - _popcount(v)
    # Rare: references longer than 64 tokens or predictions longer than _MAX_STEPS tokens.
    ref_start = np.cumsum(ref_len) - ref_len
    for p in np.nonzero((ref_len > _WORD_BITS) | (pred_len[pair_pred] > _MAX_STEPS))[0]:
        i = pair_pred[p]
        lcs[p] = _lcs_python(ref_ids[ref_start[p] : ref_start[p] + ref_len[p]].tolist(),
                             pred_ids[pred_start[i] : pred_start[i] + pred_len[i]].tolist())
    return lcs


def rouge_l_scores(inputs: CaptionInputs, beta: float = BETA) -> tuple[float, np.ndarray]:
    """(corpus ROUGE-L, per-sample ROUGE-L) as coco-caption."""
    require_samples(inputs, "ROUGE-L")
    words = inputs.words(space_split=True)
    counts = np.array([len(refs) for refs in inputs.references], dtype=np.int64)
    pair_pred = np.repeat(np.arange(len(counts)), counts)
    lcs = lcs_lengths(words, pair_pred).astype(np.float64)
    ref_len = words.lengths[: words.n_refs].astype(np.float64)
    pred_len = words.lengths[words.n_refs :].astype(np.float64)
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
    return MetricResult(corpus={"rouge_l": corpus}, per_sample={"rouge_l": per_sample},
                        estimates={"rouge_l": mean("rouge_l")})
