"""Text perturbations: typos, casing, punctuation and word-level noise on the text side of a
task (captions, VQA questions, zero-shot class templates, matching texts).

Protocol:

- ``perturb_text(text, name, rate, seed=..., window=..., protect=...)``. Rate 0 returns the text
  unchanged, for every perturbation. A non-empty text never comes back empty (or blank): an
  edit that would leave nothing returns the text unchanged.
- Randomness: a generator seeded by (seed, perturbation name, text) only, so a text gets the
  same perturbation wherever it occurs, and the positions edited at a higher rate start with
  those edited at a lower one (a random order of the candidates is drawn, the first n taken).
- Words are the runs of non-whitespace; whitespace between them is kept as it was. A word
  holding a ``protect`` character (zero-shot templates protect ``{}``, the class-name
  placeholder) is never edited or dropped; word_shuffle may move it.
- Character perturbations edit n = max(1, round(rate * L)) positions, L the number of letters
  and digits outside protected words (fewer when fewer positions qualify):
  char_swap transposes two adjacent, different letters/digits of a word; char_drop deletes a
  letter/digit (never the last one of the text); char_insert adds a random lowercase letter
  after a letter/digit; keyboard replaces an ASCII letter by one of its QWERTY neighbours
  (case kept).
- Word perturbations: word_dropout deletes n = max(1, round(rate * W)) of the W unprotected
  words, always keeping one word; word_shuffle cuts the words into consecutive windows of
  ``window`` words and reorders n = max(1, round(rate * K)) of the K windows that can change,
  each with a permutation other than the identity.
- lowercase, uppercase and no_punctuation transform the whole text at any rate above 0
  (no_punctuation removes Unicode punctuation, then collapses the runs of whitespace it leaves).
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasks.registry import Registry

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
ROW_OFFSETS = (0.0, 0.25, 0.75)  # a standard keyboard's stagger, in key widths
WORD = re.compile(r"\S+")


def qwerty_neighbours() -> dict[str, str]:
    """Letter -> the letters whose keys touch it: same row one key left or right, the rows
    above and below where the (staggered) keys overlap."""
    position = {key: (row, column + ROW_OFFSETS[row])
                for row, keys in enumerate(KEYBOARD_ROWS) for column, key in enumerate(keys)}
    neighbours = {}
    for key, (row, x) in position.items():
        neighbours[key] = "".join(
            other for other, (other_row, other_x) in position.items()
            if other != key and ((row == other_row and abs(x - other_x) == 1)
                                 or (abs(row - other_row) == 1 and abs(x - other_x) < 1)))
    return neighbours


NEIGHBOURS = qwerty_neighbours()


@dataclass(frozen=True)
class Text:
    """A text being perturbed: its characters and which of them may be edited."""

    chars: list[str]
    editable: list[bool]  # letter/digit outside a protected word

    @classmethod
    def of(cls, text: str, protect: str) -> Text:
        editable = [False] * len(text)
        for word in WORD.finditer(text):
            if any(c in protect for c in word.group()):
                continue
            for index in range(word.start(), word.end()):
                editable[index] = text[index].isalnum()
        return cls(list(text), editable)

    def positions(self) -> list[int]:
        return [index for index, ok in enumerate(self.editable) if ok]


Apply = Callable[[str, float, int, np.random.Generator, str], str]


@dataclass(frozen=True)
class Perturbation:
    name: str
    apply: Apply  # (text, rate, window, rng, protect) -> text; called with rate > 0 only


PERTURBATIONS: Registry[Perturbation] = Registry("text perturbation")


def register(name: str) -> Callable[[Apply], Apply]:
    def add(apply: Apply) -> Apply:
        PERTURBATIONS.add(name, Perturbation(name, apply))
        return apply

    return add


def perturbation_rng(seed: int, name: str, text: str) -> np.random.Generator:
    key = hashlib.sha256(f"{seed}\0{name}\0{text}".encode()).digest()
    return np.random.default_rng(int.from_bytes(key[:16], "big"))


def perturb_text(text: str, name: str, rate: float, *, seed: int, window: int = 3,
                 protect: str = "") -> str:
    """``text`` under perturbation ``name`` (see the module docstring for each one)."""
    spec = PERTURBATIONS.get(name)
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate!r}")
    if rate == 0 or not text.strip():
        return text
    out = spec.apply(text, rate, window, perturbation_rng(seed, name, text), protect)
    return out if out.strip() else text


def edits(rate: float, candidates: int) -> int:
    """How many of ``candidates`` positions to edit: max(1, round(rate * candidates)), at most
    all of them."""
    return min(candidates, max(1, round(rate * candidates))) if candidates else 0


def letters(text: str) -> int:
    return sum(c.isalnum() for c in text)


# -- characters -------------------------------------------------------------------------------


@register("char_swap")
def char_swap(text: str, rate: float, window: int, rng: np.random.Generator,
              protect: str) -> str:
    parsed = Text.of(text, protect)
    chars, ok = parsed.chars, parsed.editable
    pairs = [i for i in range(len(chars) - 1) if ok[i] and ok[i + 1] and chars[i] != chars[i + 1]]
    wanted = edits(rate, len(parsed.positions()))
    used: set[int] = set()
    for i in (pairs[k] for k in rng.permutation(len(pairs))):
        if wanted == 0:
            break
        if {i, i + 1} & used:
            continue
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
        used |= {i, i + 1}
        wanted -= 1
    return "".join(chars)


@register("char_drop")
def char_drop(text: str, rate: float, window: int, rng: np.random.Generator,
              protect: str) -> str:
    parsed = Text.of(text, protect)
    positions = parsed.positions()
    wanted = min(edits(rate, len(positions)), letters(text) - 1)  # a letter/digit stays
    dropped = {positions[k] for k in rng.permutation(len(positions))[:max(0, wanted)]}
    return "".join(c for i, c in enumerate(parsed.chars) if i not in dropped)


@register("char_insert")
def char_insert(text: str, rate: float, window: int, rng: np.random.Generator,
                protect: str) -> str:
    parsed = Text.of(text, protect)
    positions = parsed.positions()
    chosen = sorted(positions[k] for k in rng.permutation(len(positions))
                    [:edits(rate, len(positions))])
    added = {i: string.ascii_lowercase[int(rng.integers(26))] for i in chosen}
    return "".join(c + added.get(i, "") for i, c in enumerate(parsed.chars))


@register("keyboard")
def keyboard(text: str, rate: float, window: int, rng: np.random.Generator,
             protect: str) -> str:
    parsed = Text.of(text, protect)
    chars = parsed.chars
    positions = [i for i in parsed.positions() if chars[i].lower() in NEIGHBOURS]
    wanted = edits(rate, len(parsed.positions()))
    for i in sorted(positions[k] for k in rng.permutation(len(positions))[:wanted]):
        options = NEIGHBOURS[chars[i].lower()]
        typed = options[int(rng.integers(len(options)))]
        chars[i] = typed.upper() if chars[i].isupper() else typed
    return "".join(chars)


# -- whole text -------------------------------------------------------------------------------


@register("lowercase")
def lowercase(text: str, rate: float, window: int, rng: np.random.Generator,
              protect: str) -> str:
    return text.lower()


@register("uppercase")
def uppercase(text: str, rate: float, window: int, rng: np.random.Generator,
              protect: str) -> str:
    return text.upper()


@register("no_punctuation")
def no_punctuation(text: str, rate: float, window: int, rng: np.random.Generator,
                   protect: str) -> str:
    kept = "".join(c for c in text
                   if c in protect or not unicodedata.category(c).startswith("P"))
    return text if kept == text else re.sub(r"\s{2,}", " ", kept).strip()


# -- words ------------------------------------------------------------------------------------


def split_words(text: str) -> tuple[list[str], list[str]]:
    """(words, gaps): text == gaps[0] + words[0] + gaps[1] + ... + words[-1] + gaps[-1]."""
    parts = re.split(r"(\S+)", text)
    return parts[1::2], parts[0::2]


def join_words(words: list[str], gaps: list[str], kept: list[int]) -> str:
    """The words at positions ``kept`` (ascending), each after the gap that came before it in
    the text; the leading and trailing whitespace as they were."""
    if not kept:
        return ""
    body = words[kept[0]] + "".join(gaps[k] + words[k] for k in kept[1:])
    return gaps[0] + body + gaps[-1]


@register("word_dropout")
def word_dropout(text: str, rate: float, window: int, rng: np.random.Generator,
                 protect: str) -> str:
    words, gaps = split_words(text)
    free = [i for i, word in enumerate(words) if not any(c in protect for c in word)]
    wanted = min(edits(rate, len(free)), len(words) - 1)  # one word stays
    dropped = {free[k] for k in rng.permutation(len(free))[:max(0, wanted)]}
    return join_words(words, gaps, [i for i in range(len(words)) if i not in dropped])


@register("word_shuffle")
def word_shuffle(text: str, rate: float, window: int, rng: np.random.Generator,
                 protect: str) -> str:
    words, gaps = split_words(text)
    windows = [list(range(start, min(start + window, len(words))))
               for start in range(0, len(words), window)]
    movable = [w for w in windows if len({words[i] for i in w}) > 1]
    for k in sorted(rng.permutation(len(movable))[:edits(rate, len(movable))]):
        positions = movable[k]
        before = [words[i] for i in positions]
        after = [before[i] for i in rng.permutation(len(positions))]
        if after == before:  # the identity (or a swap of equal words): rotate by one
            after = before[1:] + before[:1]
        for position, word in zip(positions, after, strict=True):
            words[position] = word
    return join_words(words, gaps, list(range(len(words))))
