"""Seeded caption corpora for the captioning tests (COCO-like words plus tokenizer edge cases)
and a thin wrapper around the reference pycocoevalcap tokenizer."""

from __future__ import annotations

import random


def coco_tokenize(groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """pycocoevalcap's PTBTokenizer (one Java run) on ``{id: [caption, ...]}``."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize(
        {key: [{"caption": caption} for caption in captions] for key, captions in groups.items()}
    )

PLAIN = """a an the man woman dog cat two three people on in of with and is are sitting standing
next to near large small red blue white black green tennis pizza table street bus train horse
bike bird plate food kitchen room bed field water grass beach ocean sky tree building car sign
young old little group some holding riding looking playing walking parked""".split()  # noqa: SIM905

# Casing, punctuation, quotes, hyphens, apostrophes and contractions, accents, numbers,
# parentheses, ampersands, URL-ish tokens, dots and ellipses, abbreviations.
EDGE = """don't it's can't I'm we're they've she'll he'd dog's dogs' James' won't isn't ain't
y'all 'em o'clock rock'n'roll O'Neil d'Avignon gonna wanna cannot gotta 'tis Dunkin' ma'am
black-and-white well-known t-shirt x-ray 3-year-old co-op e-mail T-Shirt mid-'90s x--y
1 2 10 42 1,000 3.5 .5 12:30 1/2 3/4 100% $5 $5.00 2nd 1990s '90s 5km 10am 2x 24/7 1-2 -5 +3 #1
Mr. Dr. St. etc. U.S. e.g. i.e. a.m. p.m. vs. No. Inc. Jr. Mrs. Ms. Prof. Mt. Ave. ft. oz. fig.
A. B. I. x. U.K. N.Y. Ph.D. a.k.a. café naïve résumé Über jalapeño São Zürich Ångström façade
www.example.com example.com http://x.org/a/b foo@bar.com @user #tag :) :-( ;) ^_^ c++ C# AT&T
Q&A R&D &amp; & and/or w/ w/o -- --- - — – … ... .. . , ; : ! ? !! ?! ( ) [ ] { } " ' ` ``
'' ‘ ’ “ ” « » * ** + = % ~ | / @ # $ £ € ¢ ½ ° × I You He The A Man DOG Dog""".split()  # noqa: SIM905

PREFIXES = ["(", '"', "'", "`", "[", "{", "“", "‘", "``", "''", "-", "...", "*"]
SUFFIXES = [".", ",", "!", "?", ";", ":", ")", '"', "'", "...", "..", "'s", "’s", "-", ".)", '."',
            ".'", "]", "}", "”", "’", "!!", "?!", "%", "*", "/"]
SEPARATORS = [" "] * 12 + ["  ", "   ", "\t", " \t ", "\n"]

# Hand-picked captions for the things most likely to go wrong.
SPECIAL = [
    "A man (wearing a hat) rides a horse.",
    'He said "hello" to the dog\'s owner.',
    "Don't can't won't I'm you're we've she'll he'd they're",
    "black-and-white photo of a well-known dog",
    "1,000 people 3.5 miles 1/2 cup 12:30 pm 5 7/8 inches",
    "Tom & Jerry &amp; friends at AT&T",
    "www.google.com http://example.com/a/b foo@bar.com",
    "Wait... what?! Really?? ok.",
    "U.S. army Mr. Smith Dr. who etc. a.m. p.m.",
    "Café naïve résumé Über ÉCOLE",
    "{braces} [brackets] <angle> <a href=\"x\">link</a>",
    "`single' ``double'' 'quoted' “curly” ‘quotes’",
    "a -- b - c --- d — e – f",
    "multiple   spaces\tand\ttabs",
    "a line\nbreak inside",
    "plan A. The dog",
    "plan A.",
    "The plan",
    "call (555) 555-1234 or 555 555 5555",
    "no. 5 and fig. 3",
    ". . . and . . . .",
    "gonna wanna gotta lemme gimme cannot 'tis 'twas",
    "",
    "   ",
    "...",
    "the end.",
]


def random_caption(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(1, 14)):
        word = rng.choice(PLAIN) if rng.random() < 0.6 else rng.choice(EDGE)
        roll = rng.random()
        if roll < 0.12:
            word = word.capitalize()
        elif roll < 0.16:
            word = word.upper()
        if rng.random() < 0.2:
            word = rng.choice(PREFIXES) + word
        if rng.random() < 0.25:
            word += rng.choice(SUFFIXES)
        words.append(word)
    text = words[0] + "".join(rng.choice(SEPARATORS) + word for word in words[1:])
    roll = rng.random()
    if roll < 0.3:
        text += "."
    elif roll < 0.35:
        text += " ."
    if rng.random() < 0.05:
        text = " " + text
    return text


def captions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [random_caption(rng) for _ in range(n)]


def samples(
    n_images: int, seed: int, max_refs: int = 5
) -> tuple[list[str], list[str], list[list[str]]]:
    """(ids, predictions, references): 1..max_refs references per image; the special captions
    appear among the predictions and references, plus a few very long captions."""
    rng = random.Random(seed)
    ids = [f"img{i:05d}" for i in range(n_images)]
    predictions = [random_caption(rng) for _ in ids]
    references = [[random_caption(rng) for _ in range(rng.randint(1, max_refs))] for _ in ids]
    for k, text in enumerate(SPECIAL):
        predictions[(7 * k) % n_images] = text
        references[(11 * k + 3) % n_images][0] = text
    long_caption = " ".join(rng.choice(PLAIN) for _ in range(90))  # > 64 tokens
    predictions[-1] = long_caption
    references[-2].append(long_caption)
    references[-3][0] = predictions[-3]  # an exact match
    return ids, predictions, references
