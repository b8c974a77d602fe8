"""Inputs of the captioning metrics: one prediction and one or more references per image."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from tasks.metrics.captioning.ptb import tokenize


@dataclass(frozen=True)
class TokenizedCaptions:
    """Captions after coco-caption's PTB tokenisation (lower-cased, punctuation removed).

    Each caption is the space-joined string pycocoevalcap hands to its scorers; the scorers
    split it themselves (BLEU and CIDEr with ``str.split()``, ROUGE-L with ``split(" ")``).
    """

    predictions: list[str]
    references: list[list[str]]


@dataclass
class CaptionInputs:
    """Predicted and reference captions of ``ids`` (same order in all three lists).

    The inputs are validated on construction; the tokenised form is computed once, on first
    use, and shared by all metrics, so treat the lists as read-only after creating the object.
    """

    ids: list[str]
    predictions: list[str]
    references: list[list[str]]
    _tokenized: TokenizedCaptions | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _ngrams: NgramTables | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.ids = [str(sample_id) for sample_id in self.ids]
        self.predictions = list(self.predictions)
        self.references = [list(refs) for refs in self.references]
        if not len(self.ids) == len(self.predictions) == len(self.references):
            raise ValueError(
                f"ids, predictions and references must have the same length, got "
                f"{len(self.ids)}, {len(self.predictions)} and {len(self.references)}"
            )
        seen: set[str] = set()
        for sample_id, prediction, refs in zip(
            self.ids, self.predictions, self.references, strict=True
        ):
            if sample_id in seen:
                raise ValueError(f"duplicate id {sample_id!r}: every sample needs a unique id")
            seen.add(sample_id)
            if not isinstance(prediction, str):
                raise ValueError(
                    f"prediction of id {sample_id!r} must be a string, got {type(prediction).__name__}"
                )
            if not refs:
                raise ValueError(f"id {sample_id!r} has no reference caption (at least one needed)")
            for ref in refs:
                if not isinstance(ref, str):
                    raise ValueError(
                        f"references of id {sample_id!r} must be strings, got {type(ref).__name__}"
                    )

    def __len__(self) -> int:
        return len(self.ids)

    def tokenized(self) -> TokenizedCaptions:
        """PTB-tokenised captions (computed on first call, then cached)."""
        if self._tokenized is None:
            self._tokenized = tokenize_inputs(self)
        return self._tokenized

    def ngrams(self) -> NgramTables:
        """N-gram counts of the tokenised captions for BLEU and CIDEr (cached)."""
        if self._ngrams is None:
            self._ngrams = build_ngram_tables(self.tokenized())
        return self._ngrams


def tokenize_inputs(inputs: CaptionInputs) -> TokenizedCaptions:
    """Tokenise like ``COCOEvalCap``: one tokenizer run over all references (image after image,
    in ``ids`` order), one over the predictions."""
    flat = tokenize([ref for refs in inputs.references for ref in refs])
    references, start = [], 0
    for refs in inputs.references:
        references.append(flat[start : start + len(refs)])
        start += len(refs)
    return TokenizedCaptions(tokenize(inputs.predictions), references)


@dataclass(frozen=True)
class NgramCounts:
    """Counts of the distinct n-grams of one order in every caption (``str.split()`` words).

    N-grams are dense integer ids (``0 <= id < n_grams``) shared by predictions and references.
    Reference row ``k`` says n-gram ``ref_gram[k]`` occurs ``ref_count[k]`` times in reference
    caption ``ref_caption[k]`` (rows sorted by sample, n-gram, caption); prediction rows
    likewise, sorted by (sample, n-gram). ``image_key = sample * n_grams + n-gram`` lists,
    sorted, the n-grams found in a sample's references, with their largest count in any one
    reference (``image_max_count``).
    """

    n_grams: int
    ref_caption: np.ndarray
    ref_gram: np.ndarray
    ref_count: np.ndarray
    pred_sample: np.ndarray
    pred_gram: np.ndarray
    pred_count: np.ndarray
    image_key: np.ndarray
    image_max_count: np.ndarray


@dataclass(frozen=True)
class NgramTables:
    """What BLEU and CIDEr need, computed once per ``CaptionInputs``."""

    ref_sample: np.ndarray  # sample index of every reference caption (flattened, in order)
    ref_length: np.ndarray  # words per reference caption
    pred_length: np.ndarray  # words per prediction
    orders: list[NgramCounts]  # orders[n - 1] holds the n-grams


def word_ids(sentences: list[list[str]]) -> tuple[np.ndarray, np.ndarray, int]:
    """(ids of all words, caption after caption; words per caption; vocabulary size)."""
    words = list(chain.from_iterable(sentences))
    vocab = {word: i for i, word in enumerate(dict.fromkeys(words))}
    ids = np.fromiter(map(vocab.__getitem__, words), dtype=np.int64, count=len(words))
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    return ids, lengths, len(vocab)


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys, how often each occurs) of a sorted array."""
    first = np.ones(len(sorted_keys), dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = np.nonzero(first)[0]
    return sorted_keys[starts], np.diff(np.append(starts, len(sorted_keys)))


def _order_counts(
    caption: np.ndarray, gram: np.ndarray, n_grams: int, ref_sample: np.ndarray,
    first_ref: np.ndarray, max_refs: int,
) -> NgramCounts:
    """Count the n-grams of one order with one sort for references and one for predictions.

    A reference n-gram occurrence gets the key ((sample * n_grams + n-gram) * max_refs +
    reference number within the sample), so after sorting, equal keys are a (caption, n-gram)
    count and equal keys // max_refs the same n-gram in one sample's references.
    """
    n_refs = len(ref_sample)
    in_ref = caption < n_refs
    ref_caption = caption[in_ref]
    sample = ref_sample[ref_caption]
    keys, ref_count = _runs(np.sort(
        (sample * n_grams + gram[in_ref]) * max_refs + (ref_caption - first_ref[sample])))
    image_of_row = keys // max_refs
    image_key, image_rows = _runs(image_of_row)
    image_max = np.maximum.reduceat(ref_count, np.cumsum(image_rows) - image_rows) if len(
        ref_count) else ref_count
    sample_of_row = image_of_row // n_grams
    pred_keys, pred_count = _runs(np.sort((caption[~in_ref] - n_refs) * n_grams + gram[~in_ref]))
    return NgramCounts(
        n_grams, first_ref[sample_of_row] + keys % max_refs, image_of_row % n_grams, ref_count,
        pred_keys // n_grams, pred_keys % n_grams, pred_count, image_key, image_max,
    )


def build_ngram_tables(tokens: TokenizedCaptions, max_n: int = 4) -> NgramTables:
    """Encode every caption's n-grams (orders 1..max_n) as integer ids, fully vectorised."""
    sentences = [ref.split() for refs in tokens.references for ref in refs]
    n_refs = len(sentences)
    sentences += [pred.split() for pred in tokens.predictions]
    words, lengths, vocab_size = word_ids(sentences)
    owner = np.repeat(np.arange(len(sentences)), lengths)  # caption of every word position
    position = np.arange(len(words)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    room = lengths[owner] - position  # words from this position to the end of its caption
    refs_per_sample = np.array([len(refs) for refs in tokens.references], dtype=np.int64)
    ref_sample = np.repeat(np.arange(len(refs_per_sample)), refs_per_sample)
    first_ref = np.cumsum(refs_per_sample) - refs_per_sample
    max_refs = int(refs_per_sample.max(initial=1))
    orders, gram_ids, n_gram_ids = [], words, max(vocab_size, 1)
    for n in range(1, max_n + 1):
        starts = np.nonzero(room >= n)[0]
        if n > 1:  # extend the (n-1)-gram starting here by the word n-1 places further on
            codes = gram_ids[starts] * vocab_size + words[starts + n - 1]
            uniques, inverse = np.unique(codes, return_inverse=True)
            gram_ids = np.full(len(words), -1, dtype=np.int64)
            gram_ids[starts] = inverse
            n_gram_ids = max(len(uniques), 1)
        orders.append(_order_counts(owner[starts], gram_ids[starts], n_gram_ids, ref_sample,
                                    first_ref, max_refs))
    return NgramTables(ref_sample, lengths[:n_refs], lengths[n_refs:], orders)
