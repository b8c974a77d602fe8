"""Our pure-Python PTB tokenisation vs pycocoevalcap's (Stanford CoreNLP 3.4.1 via Java)."""

from __future__ import annotations

import random

import pytest

from tasks.metrics.captioning import ptb
from tasks.metrics.captioning.ptb import raw_tokens, tokenize, tokenize_to_lists
from tests.metrics.captioning.corpus import SPECIAL, captions, coco_tokenize

# Strings that exercise single lexer rules; each line is also compared with Java.
RULES = [
    "abc123 a1 hello.world wait!what x?y end.",
    "1,000 3.5 .5 12:30 1.2.3 -5 +5 5-6 1990s 3rd 2x 100% $5 5$",
    "o'clock rock'n'roll y'all ma'am 'em '90s can't cannot don't won't ain't",
    "image.jpg file.txt 5.x @user #tag foo@bar.com http://x.org/a?b=c www.x.com x.com",
    "£5 €5 ¢5 ¥5 ½ ¼ – — … dog's dogs' james' 's",
    ":) :-( ;) :D <3 ^_^ c++ C# f#",
    "AT&T A&B a&b Q&A R&D &amp; &lt; &gt; &quot;",
    "(a) [b] {c} <d> < e > a<b a>b <a b=\"c\"> <a b=c>",
    "soft\u00adhyphen naïve Ångström 東京 Москва",
    "d'Avignon O'Neil l'amour 1st 10am covid-19 3-year-old well-known. e.g., U.S.A. a.k.a.",
    "a.b.c. x.y U.S. US. u.s it. I. no. etc.. Mr. mr mrs. st. dr. vs. Inc. jr. sr. Ltd. oz.",
    "jr.S jr.Sx etc.x dr.who Jan.X abc.S PA.x PTY. ltd Pty. x",
    "...... ....... .. . . . . . . .... a . . . . a",
    "a--b a---b a----b a-----b -- --- ---- ----- - -",
    "5 7/8 555-1234 (555) 555-1234 555 555 5555 10 200 300 55.555.5555 1 2 3 4",
    "y'know Y'ALL y' y'5 j' l'x d'x o'o O`o x'o 'n 'n' n' 'emx 'tisx ’tis",
    "rock’n’roll don’t can’t it’s I’m o’clock ‘quote’ it`s don`t it&apos;s",
    "x. The dog A. He ran I. You!! b. <n:x> c N.Y. <a   bus>\t** Dog.",
]


def java_lines(lines: list[str]) -> list[str]:
    """pycocoevalcap's output for a stream of captions, in order (one Java run)."""
    out = coco_tokenize({f"{i:06d}": [line] for i, line in enumerate(lines)})
    return [out[f"{i:06d}"][0] for i in range(len(lines))]


@pytest.fixture(scope="module")
def stream() -> list[str]:
    """Several hundred images' worth of captions: random edge-case captions, the special and
    rule-exercising ones, and pairs whose tokenisation depends on the next caption."""
    lines = captions(2400, seed=3) + SPECIAL + RULES
    random.Random(4).shuffle(lines)
    # Pairs whose tokenisation depends on the next line(s); the stream ends with an acronym.
    return lines + ["plan A.", "The dog", "plan A.", "the dog", "no.", "5 dogs", "b.", "In",
                    "x.", "   ", "", "The end", "U.K.", "THE end", "a.m. the", "plan A."]


@pytest.fixture(scope="module")
def java_stream(java: None, stream: list[str]) -> list[str]:
    return java_lines(stream)


def test_tokenize_matches_java_ptbtokenizer(stream: list[str], java_stream: list[str]) -> None:
    ours = tokenize(stream)
    differ = [(line, coco, mine) for line, coco, mine in zip(stream, java_stream, ours, strict=True)
              if coco != mine]
    assert not differ, f"{len(differ)} captions differ, e.g. {differ[:3]}"


def test_fast_path_equals_full_lexer(stream: list[str]) -> None:
    """Chunk caching must never change a result: compare with lexing every line as a whole."""
    ptb._chunk_cache.clear()
    ptb._final_chunk_cache.clear()
    texts = [ptb._clean(line) for line in stream]
    contexts = [ptb._right_context(texts, i) for i in range(len(texts))]
    full = [
        ptb._finish(ptb._lexer().lex(text if nxt is None else f"{text}\n{nxt}", len(text)))
        for text, nxt in zip(texts, contexts, strict=True)
        if not ptb._WHOLE_LINE.search(text)  # (those always take the full lexer anyway)
    ]
    ours = [line for text, line in zip(texts, tokenize(stream), strict=True)
            if not ptb._WHOLE_LINE.search(text)]
    assert ours == full


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("A man (wearing a hat) rides a horse.", "a man -lrb- wearing a hat -rrb- rides a horse"),
        ('He said "hello" to the dog\'s owner.', "he said hello to the dog 's owner"),
        ("Don't can't won't I'm", "do n't ca n't wo n't i 'm"),
        ("black-and-white photo", "black-and-white photo"),
        ("1,000 people 3.5 miles 1/2 cup", "1,000 people 3.5 miles 1/2 cup"),
        ("5 7/8 inches", "5\u00a07/8 inches"),
        ("Tom & Jerry &amp; AT&T", "tom & jerry & at&t"),
        ("Wait... what?! ok.", "wait what ?! ok"),
        ("U.S. army Mr. Smith etc.", "u.s. army mr. smith etc."),
        ("Café ÉCOLE naïve", "café école naïve"),
        ("{a} [b] <c>", "-lcb- a -rcb- -lsb- b -rsb- <c>"),
        ("a -- b — c", "a b c"),
        ("multiple   spaces\tand\ttabs", "multiple spaces and tabs"),
        ("gonna cannot", "gon na can not"),
        ("£5 ½", "# 5 1/2"),
        ("...", ""),
        ("", ""),
    ],
)
def test_hand_checked_tokens(caption: str, expected: str) -> None:
    assert tokenize([caption]) == [expected]


def test_a_caption_can_depend_on_the_next_one() -> None:
    # "A." before "The" ends a sentence (the Java lexer looks across the line break).
    assert tokenize(["plan A.", "The dog"]) == ["plan a", "the dog"]
    assert tokenize(["plan A.", "the dog"]) == ["plan a.", "the dog"]
    assert tokenize(["plan A."]) == ["plan a."]


def test_tokenize_to_lists_and_raw_tokens() -> None:
    assert tokenize_to_lists(["A dog's bone.", "..."]) == [["a", "dog", "'s", "bone"], []]
    assert raw_tokens("A (dog).") == ["A", "-LRB-", "dog", "-RRB-", "."]


def test_documented_difference_line_breaks_are_spaces() -> None:
    # Java would start a new output line at "\r" and shift every later caption.
    assert tokenize(["a\rb", "c"]) == ["a b", "c"]
    assert tokenize(["a\u2028b"]) == ["a b"]
