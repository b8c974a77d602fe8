"""A real ``transformers.CLIPTokenizer`` whose BPE vocabulary covers the demo captions.

Layout mirrors OpenAI CLIP: the 256 byte-level characters, the same with ``</w>``, one token
per merge, then ``<|startoftext|>`` and ``<|endoftext|>``. Merges are added word by word so
every listed word becomes a single ``word</w>`` token; any other text still tokenizes (falls
back to characters), so nothing ever maps to ``unk``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
_EOW = "</w>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table (the ByteLevel pre-tokenizer's)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _apply_merges(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Segment ``word`` exactly like the BPE model would with the merges ranked so far."""
    toks = [*word[:-1], word[-1] + _EOW]
    while len(toks) > 1:
        best: tuple[int, int] | None = None
        for i in range(len(toks) - 1):
            rank = ranks.get((toks[i], toks[i + 1]))
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        toks[i : i + 2] = [toks[i] + toks[i + 1]]
    return toks


def build_vocab_and_merges(
    words: Iterable[str],
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges that turn every word of ``words`` into one token.

    Words are processed in order; for each, the merges known so far are applied and new merges
    join the remaining pieces left to right. New merges rank after all earlier ones, so they
    cannot change how an earlier word is segmented (it is already a single token by then).
    Words must be lowercase and made of printable ASCII (what the caption generator emits).
    """
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + _EOW] = len(vocab)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):  # de-duplicate, keep order
        if not word or word != word.lower() or not all(33 <= ord(ch) <= 126 for ch in word):
            raise ValueError(f"word must be non-empty lowercase printable ASCII: {word!r}")
        toks = _apply_merges(word, ranks)
        while len(toks) > 1:
            pair = (toks[0], toks[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            merged = toks[0] + toks[1]
            vocab.setdefault(merged, len(vocab))
            toks = [merged, *toks[2:]]
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def build_clip_tokenizer(words: Iterable[str], *, model_max_length: int = 32) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` (tokenizers backend) covering ``words``; pads with ``<|endoftext|>``."""
    from transformers import CLIPTokenizer

    vocab, merges = build_vocab_and_merges(words)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
