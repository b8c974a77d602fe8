"""Text perturbations: the registry equals the config's choices; rate 0 is the identity; each
perturbation at rate > 0 changes the text as its definition says (checked edit by edit against
an independent reading of the definition); seeded by (seed, name, text); never empty."""

from __future__ import annotations

import json
import string
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from tasks.robustness.perturbations import PERTURBATIONS, perturb_text

TEXTS = ["A photo of a red square, seen from above!", "two dogs play in the snow",
         "What colour is the bus?", "x", "Hello,   world.", "a photo of a {}."]
# a standard QWERTY keyboard, neighbours written out by hand from the layout
QWERTY = {
    "q": "wa", "w": "qeas", "e": "wrsd", "r": "etdf", "t": "ryfg", "y": "tugh", "u": "yihj",
    "i": "uojk", "o": "ipkl", "p": "ol", "a": "qwsz", "s": "weadzx", "d": "ersfxc",
    "f": "rtdgcv", "g": "tyfhvb", "h": "yugjbn", "j": "uihknm", "k": "iojlm", "l": "opk",
    "z": "asx", "x": "sdzc", "c": "dfxv", "v": "fgcb", "b": "ghvn", "n": "hjbm", "m": "jkn",
}
LONG = "The quick brown fox jumps over the lazy dog, near the old river bank today."


def test_registry_names_equal_the_config_choices_in_a_fresh_interpreter():
    from tasks.config import TEXT_PERTURBATIONS

    code = ("import json; from tasks.robustness.perturbations import PERTURBATIONS; "
            "print(json.dumps(PERTURBATIONS.names()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    assert sorted(TEXT_PERTURBATIONS) == json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(PERTURBATIONS.names()))
def test_rate_zero_is_the_identity_and_nothing_comes_back_empty(name: str):
    for text in [*TEXTS, "", "   ", "!!!", "a"]:
        assert perturb_text(text, name, 0.0, seed=3) == text
        for rate in (0.1, 0.5, 1.0):
            out = perturb_text(text, name, rate, seed=3)
            assert out.strip() or not text.strip(), (name, text, out)


@pytest.mark.parametrize("name", sorted(PERTURBATIONS.names()))
def test_seeded_by_seed_name_and_text(name: str):
    same = {perturb_text(LONG, name, 0.3, seed=1) for _ in range(3)}
    assert len(same) == 1 and same != {LONG}
    if name not in ("lowercase", "uppercase", "no_punctuation"):
        seeds = {perturb_text(LONG, name, 0.3, seed=s) for s in range(6)}
        assert len(seeds) > 1


def test_char_swap_transposes_adjacent_characters_within_words():
    for seed in range(20):
        out = perturb_text(LONG, "char_swap", 0.1, seed=seed)
        assert len(out) == len(LONG) and out != LONG
        diff = [i for i, (a, b) in enumerate(zip(LONG, out, strict=True)) if a != b]
        swaps = 0
        while diff:  # consecutive pairs (i, i + 1) with the characters exchanged
            i = diff.pop(0)
            assert diff and diff.pop(0) == i + 1, (LONG, out)
            assert (out[i], out[i + 1]) == (LONG[i + 1], LONG[i]) and LONG[i:i + 2].isalnum()
            swaps += 1
        letters = sum(c.isalnum() for c in LONG)
        assert swaps == round(0.1 * letters)


def test_keyboard_replaces_letters_by_their_qwerty_neighbours():
    text = "Hello World Of Typing"
    for seed in range(20):
        out = perturb_text(text, "keyboard", 0.2, seed=seed)
        changed = [(a, b) for a, b in zip(text, out, strict=True) if a != b]
        assert len(changed) == round(0.2 * sum(c.isalnum() for c in text))
        for before, after in changed:
            assert after.lower() in QWERTY[before.lower()]
            assert after.isupper() == before.isupper()


def test_char_drop_and_insert_remove_or_add_letters():
    letters = sum(c.isalnum() for c in LONG)
    for seed in range(10):
        dropped = perturb_text(LONG, "char_drop", 0.1, seed=seed)
        assert len(dropped) == len(LONG) - round(0.1 * letters)
        assert is_subsequence(dropped, LONG) and dropped.count(" ") == LONG.count(" ")
        inserted = perturb_text(LONG, "char_insert", 0.1, seed=seed)
        assert len(inserted) == len(LONG) + round(0.1 * letters)
        assert is_subsequence(LONG, inserted)
        assert all(c in string.ascii_lowercase for c in extra_characters(LONG, inserted))
    assert perturb_text("a", "char_drop", 1.0, seed=0) == "a"  # the last letter stays
    assert perturb_text("ab", "char_drop", 1.0, seed=0) in ("a", "b")


def is_subsequence(short: str, long: str) -> bool:
    rest = iter(long)
    return all(c in rest for c in short)


def extra_characters(short: str, long: str) -> list[str]:
    extra, position = [], 0
    for c in long:
        if position < len(short) and short[position] == c:
            position += 1
        else:
            extra.append(c)
    return extra


def test_casing_and_punctuation():
    text = "A Photo, of a RED square: seen (from) above!"
    assert perturb_text(text, "lowercase", 0.1, seed=0) == text.lower()
    assert perturb_text(text, "uppercase", 0.1, seed=0) == text.upper()
    out = perturb_text(text, "no_punctuation", 0.1, seed=0)
    assert out == "A Photo of a RED square seen from above"
    assert not any(unicodedata.category(c).startswith("P") for c in out)
    assert perturb_text("«Bonjour» — ça va ?", "no_punctuation", 0.5, seed=0) == "Bonjour ça va"


def test_word_dropout_drops_whole_words_and_keeps_one():
    words = LONG.split()
    for seed in range(10):
        out = perturb_text(LONG, "word_dropout", 0.25, seed=seed).split()
        assert len(out) == len(words) - round(0.25 * len(words))
        assert is_subsequence(out, words)
    assert len(perturb_text("one two three", "word_dropout", 1.0, seed=0).split()) == 1


def test_word_shuffle_moves_words_only_within_windows():
    words = LONG.split()  # 14 words: windows of 3 -> 5 windows
    for seed in range(10):
        out = perturb_text(LONG, "word_shuffle", 0.4, seed=seed, window=3).split()
        assert sorted(out) == sorted(words) and out != words
        windows = [(out[i:i + 3], words[i:i + 3]) for i in range(0, len(words), 3)]
        assert all(sorted(a) == sorted(b) for a, b in windows)
        assert sum(a != b for a, b in windows) == round(0.4 * 5)


def test_protected_placeholder_survives_every_perturbation():
    for name in PERTURBATIONS.names():
        for seed in range(5):
            out = perturb_text("a photo of a {}.", name, 1.0, seed=seed, protect="{}")
            assert out.count("{}") == 1 and out.format("cat"), (name, out)
            assert perturb_text("{}", name, 1.0, seed=seed, protect="{}") in ("{}", "{}".upper())


def test_higher_rates_start_with_the_lower_rates_edits():
    low = perturb_text(LONG, "word_dropout", 0.1, seed=4).split()
    high = perturb_text(LONG, "word_dropout", 0.4, seed=4).split()
    assert set(LONG.split()) - set(low) <= set(LONG.split()) - set(high)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        perturb_text("text", "char_swap", 1.5, seed=0)
    with pytest.raises(KeyError, match="unknown text perturbation"):
        perturb_text("text", "emoji", 0.1, seed=0)
