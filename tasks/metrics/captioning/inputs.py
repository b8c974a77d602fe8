"""Inputs of the captioning metrics (one prediction and one or more references per image) and
the derived forms the metrics share: PTB tokens, word ids and n-gram counts, each computed once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from typing import TypeVar

import numpy as np

from tasks.metrics.captioning.ptb import tokenize

T = TypeVar("T")
_OTHER_WHITESPACE = re.compile(r"[^\S ]")


@dataclass(frozen=True)
class TokenizedCaptions:
    """Captions after coco-caption's PTB tokenisation (lower-cased, punctuation removed).

    Each caption is the space-joined string pycocoevalcap hands to its scorers; the scorers
    split it themselves (BLEU and CIDEr with ``str.split()``, ROUGE-L with ``split(" ")``).
    """

    predictions: list[str]
    references: list[list[str]]


@dataclass(frozen=True)
class WordTable:
    """Every tokenised caption as integer word ids: all references (image after image), then
    all predictions. ``lengths`` has one entry per caption, ``ids`` all words end to end."""

    ids: np.ndarray
    lengths: np.ndarray
    vocab_size: int
    n_refs: int


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
    """What BLEU and CIDEr need."""

    ref_sample: np.ndarray  # sample index of every reference caption (flattened, in order)
    ref_length: np.ndarray  # words per reference caption
    pred_length: np.ndarray  # words per prediction
    orders: list[NgramCounts]  # orders[n - 1] holds the n-grams


@dataclass
class CaptionInputs:
    """Predicted and reference captions of ``ids`` (same order in all three lists).

    The inputs are validated on construction. Derived forms (tokens, word ids, n-grams) are
    computed on first use and shared by all metrics, so treat the lists as read-only.
    """

    ids: list[str]
    predictions: list[str]
    references: list[list[str]]
    # the images, for image-grounded metrics (CLIPScore); None when scoring text only
    image_paths: list[str] | None = None
    _cache: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)

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
                raise ValueError(f"prediction of id {sample_id!r} must be a string, "
                                 f"got {type(prediction).__name__}")
            if not refs:
                raise ValueError(f"id {sample_id!r} has no reference caption (at least one needed)")
            if not all(isinstance(ref, str) for ref in refs):
                raise ValueError(f"references of id {sample_id!r} must all be strings")

    def __len__(self) -> int:
        return len(self.ids)

    def _cached(self, key: str, compute: Callable[[], T]) -> T:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]  # type: ignore[return-value]

    def tokenized(self) -> TokenizedCaptions:
        """PTB-tokenised captions, as pycocoevalcap's ``PTBTokenizer`` (cached)."""
        return self._cached("tokens", lambda: tokenize_inputs(self))

    def words(self, space_split: bool = False) -> WordTable:
        """Word ids of the tokenised captions split like BLEU/CIDEr (``str.split()``) or, with
        ``space_split``, like ROUGE-L (``split(" ")``); the two usually agree (cached)."""
        table = self._cached("words", lambda: build_word_table(self.tokenized(), str.split))
        if not space_split:
            return table
        return self._cached("space_words", lambda: table if _split_agree(self.tokenized()) else
                            build_word_table(self.tokenized(), lambda text: text.split(" ")))

    def ngrams(self) -> NgramTables:
        """N-gram counts of the tokenised captions for BLEU and CIDEr (cached)."""
        return self._cached("ngrams", lambda: build_ngram_tables(self.words(), self.references))


def require_samples(inputs: CaptionInputs, metric: str, minimum: int = 1) -> None:
    """Raise ``ValueError`` (reported as a skip by the evaluation) for too few samples."""
    if len(inputs) < minimum:
        raise ValueError(f"{metric} needs at least {minimum} sample(s), got {len(inputs)}")


def tokenize_inputs(inputs: CaptionInputs) -> TokenizedCaptions:
    """Tokenise like ``COCOEvalCap``: one tokenizer run over all references (image after image,
    in ``ids`` order), one over the predictions."""
    flat = tokenize([ref for refs in inputs.references for ref in refs])
    references, start = [], 0
    for refs in inputs.references:
        references.append(flat[start : start + len(refs)])
        start += len(refs)
    return TokenizedCaptions(tokenize(inputs.predictions), references)


def _all_captions(tokens: TokenizedCaptions) -> list[str]:
    return [*chain.from_iterable(tokens.references), *tokens.predictions]


def _split_agree(tokens: TokenizedCaptions) -> bool:
    """Whether ``split(" ")`` gives the same words as ``split()`` for every caption: true unless
    a caption is empty or holds whitespace other than the single spaces between tokens (e.g. the
    no-break space of ``5 7/8``)."""
    captions = _all_captions(tokens)
    return all(captions) and _OTHER_WHITESPACE.search("".join(captions)) is None


def build_word_table(tokens: TokenizedCaptions, split: Callable[[str], list[str]]) -> WordTable:
    """Integer ids for the words of every caption (references first, then predictions)."""
    captions = _all_captions(tokens)
    sentences = list(map(split, captions))
    words = list(chain.from_iterable(sentences))
    vocab = {word: i for i, word in enumerate(dict.fromkeys(words))}
    ids = np.fromiter(map(vocab.__getitem__, words), dtype=np.int64, count=len(words))
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    return WordTable(ids, lengths, len(vocab), len(captions) - len(tokens.predictions))


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
    if (len(first_ref) + 1) * n_grams * max_refs >= 2**62:
        raise ValueError("too many captions and distinct n-grams for 64-bit n-gram keys")
    in_ref = caption < n_refs
    ref_caption = caption[in_ref]
    sample = ref_sample[ref_caption]
    keys, ref_count = _runs(np.sort(
        (sample * n_grams + gram[in_ref]) * max_refs + (ref_caption - first_ref[sample])))
    image_of_row = keys // max_refs
    image_key, image_rows = _runs(image_of_row)
    image_max = (np.maximum.reduceat(ref_count, np.cumsum(image_rows) - image_rows)
                 if len(ref_count) else ref_count)
    pred_keys, pred_count = _runs(np.sort((caption[~in_ref] - n_refs) * n_grams + gram[~in_ref]))
    return NgramCounts(
        n_grams, first_ref[image_of_row // n_grams] + keys % max_refs, image_of_row % n_grams,
        ref_count, pred_keys // n_grams, pred_keys % n_grams, pred_count, image_key, image_max,
    )


def _densify(codes: np.ndarray, bound: int) -> tuple[np.ndarray, int]:
    """Renumber ``0 <= codes < bound`` as 0..k-1 (order kept); returns (new codes, k)."""
    if bound <= max(8 * len(codes), 1 << 20):  # small code space: a lookup table is fastest
        present = np.zeros(bound, dtype=np.int64)
        present[codes] = 1
        table = np.cumsum(present) - 1
        return table[codes], max(int(table[-1]) + 1 if bound else 0, 1)
    uniques, inverse = np.unique(codes, return_inverse=True)
    return inverse.reshape(-1), max(len(uniques), 1)


def build_ngram_tables(
    words: WordTable, references: list[list[str]], max_n: int = 4
) -> NgramTables:
    """Encode every caption's n-grams (orders 1..max_n) as dense integer ids, vectorised.

    An n-gram's id comes from its (n-1)-gram prefix id and its last word id, made dense again
    after each order so that keys stay small.
    """
    ids, lengths, n_refs = words.ids, words.lengths, words.n_refs
    owner = np.repeat(np.arange(len(lengths)), lengths)  # caption of every word position
    position = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    room = lengths[owner] - position  # words from this position to the end of its caption
    refs_per_sample = np.array([len(refs) for refs in references], dtype=np.int64)
    ref_sample = np.repeat(np.arange(len(refs_per_sample)), refs_per_sample)
    first_ref = np.cumsum(refs_per_sample) - refs_per_sample
    max_refs = int(refs_per_sample.max(initial=1))
    orders, gram_ids, n_gram_ids = [], ids, max(words.vocab_size, 1)
    for n in range(1, max_n + 1):
        starts = np.nonzero(room >= n)[0]
        if n > 1:  # extend the (n-1)-gram starting here by the word n-1 places further on
            codes = gram_ids[starts] * words.vocab_size + ids[starts + n - 1]
            dense, n_gram_ids = _densify(codes, n_gram_ids * words.vocab_size)
            gram_ids = np.full(len(ids), -1, dtype=np.int64)
            gram_ids[starts] = dense
        orders.append(_order_counts(owner[starts], gram_ids[starts], n_gram_ids, ref_sample,
                                    first_ref, max_refs))
    return NgramTables(ref_sample, lengths[:n_refs], lengths[n_refs:], orders)
