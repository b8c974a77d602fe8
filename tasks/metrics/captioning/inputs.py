"""Inputs of the captioning metrics: one prediction and one or more references per image."""

from __future__ import annotations

from dataclasses import dataclass, field

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

    N-grams are dense integer ids shared by predictions and references. Rows are sorted by
    (caption, n-gram id): reference row ``k`` says n-gram ``ref_gram[k]`` occurs
    ``ref_count[k]`` times in reference caption ``ref_caption[k]``; likewise for predictions,
    whose caption index is the sample index.
    """

    n_grams: int
    ref_caption: np.ndarray
    ref_gram: np.ndarray
    ref_count: np.ndarray
    pred_sample: np.ndarray
    pred_gram: np.ndarray
    pred_count: np.ndarray


@dataclass(frozen=True)
class NgramTables:
    """What BLEU and CIDEr need, computed once per ``CaptionInputs``."""

    ref_sample: np.ndarray  # sample index of every reference caption (flattened, in order)
    ref_length: np.ndarray  # words per reference caption
    pred_length: np.ndarray  # words per prediction
    orders: list[NgramCounts]  # orders[n - 1] holds the n-grams


def _count_rows(caption: np.ndarray, gram: np.ndarray, n_grams: int) -> tuple[np.ndarray, ...]:
    keys, counts = np.unique(caption * n_grams + gram, return_counts=True)
    return keys // n_grams, keys % n_grams, counts


def build_ngram_tables(tokens: TokenizedCaptions, max_n: int = 4) -> NgramTables:
    """Encode every caption's n-grams (orders 1..max_n) as integer ids, fully vectorised."""
    sentences = [ref.split() for refs in tokens.references for ref in refs]
    n_refs = len(sentences)
    sentences += [pred.split() for pred in tokens.predictions]
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    vocab: dict[str, int] = {}
    words = np.fromiter(
        (vocab.setdefault(word, len(vocab)) for sentence in sentences for word in sentence),
        dtype=np.int64, count=int(lengths.sum()),
    )
    owner = np.repeat(np.arange(len(sentences)), lengths)  # caption of every word position
    position = np.arange(len(words)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    room = lengths[owner] - position  # words from this position to the end of its caption
    ref_sample = np.repeat(np.arange(len(tokens.references)),
                           [len(refs) for refs in tokens.references])
    orders, gram_ids, n_gram_ids = [], words, max(len(vocab), 1)
    for n in range(1, max_n + 1):
        if n > 1:  # extend the (n-1)-gram starting here by the word n-1 places further on
            valid = room >= n
            codes = np.full(len(words), -1, dtype=np.int64)
            codes[valid] = gram_ids[valid] * len(vocab) + words[np.nonzero(valid)[0] + n - 1]
            uniques, inverse = np.unique(codes[valid], return_inverse=True)
            gram_ids = np.full(len(words), -1, dtype=np.int64)
            gram_ids[valid] = inverse
            n_gram_ids = max(len(uniques), 1)
        starts = np.nonzero(room >= n)[0]
        caption = owner[starts]
        in_ref = caption < n_refs
        ref_rows = _count_rows(caption[in_ref], gram_ids[starts[in_ref]], n_gram_ids)
        pred_rows = _count_rows(caption[~in_ref] - n_refs, gram_ids[starts[~in_ref]], n_gram_ids)
        orders.append(NgramCounts(n_gram_ids, *ref_rows, *pred_rows))
    return NgramTables(ref_sample, lengths[:n_refs], lengths[n_refs:], orders)
