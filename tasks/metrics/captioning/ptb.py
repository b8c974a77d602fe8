"""Pure-Python re-implementation of coco-caption's tokenisation (pycocoevalcap ``PTBTokenizer``).

pycocoevalcap joins all captions with newlines (replacing newlines inside a caption by spaces),
runs Stanford CoreNLP 3.4.1's ``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase``
over that text, and removes the tokens in ``PUNCTUATIONS`` from every output line. This module
reproduces that output without Java:

* a JFlex-like longest-match lexer (ties go to the earlier rule, trailing contexts count towards
  the match length) whose rules re-create the PTBLexer of CoreNLP 3.4.1 with its default
  ``ptb3Escaping`` normalisations: ``(`` -> ``-LRB-``, ``[`` -> ``-LSB-``, ``{`` -> ``-LCB-``,
  LaTeX quotes, ``...`` for ellipses, ``--`` for dashes, ``&amp;`` -> ``&``, currency symbols
  (``£`` -> ``#``, ``€`` -> ``$``, ``¢`` -> ``cents``), composed fractions (``½`` -> ``1/2``);
  contractions are split (``do n't``, ``it 's``, ``gon na``, ``can not``); abbreviations,
  acronyms, numbers (``1,000``, ``3.5``, ``12:30``, ``1/2``, ``5 7/8`` as one token with a
  no-break space), hyphenated words, URLs, e-mail addresses, SGML tags and emoticons are kept
  together as the Java lexer does;
* tokens are then lower-cased (Java ``toLowerCase(Locale.ENGLISH)`` ~ ``str.lower``), which is
  why ``-LRB-`` comes out as ``-lrb-`` and is *not* removed by coco's (upper-case) punctuation
  list, exactly as in pycocoevalcap;
* the lexer runs over the whole newline-joined stream, so a caption's last token can depend on
  the next caption (e.g. ``"plan A."`` followed by a caption starting ``"The ..."`` gives
  ``plan a``, otherwise ``plan a.``), as in pycocoevalcap. ``tokenize`` takes the same ordered
  list of captions pycocoevalcap would write, so this is reproduced as well.

Speed: a line is cut at the spaces and tabs that no token or lexer context can cross, and each
piece is looked up in a cache of already-lexed pieces, so the lexer mostly runs once per distinct
word form. Lines with SGML tags or unusual spaces, lines whose end depends on the next line, and
the last line of the stream (end-of-file contexts) are lexed as a whole. In the lexer, only the
rules that can start with the character at hand are tried (found from the parsed rule regexes).

Known differences from pycocoevalcap (all exotic for captions):

* Carriage returns, vertical tabs, form feeds and U+2028/U+2029 inside a caption are treated as
  spaces. The Java tokenizer turns them into extra output lines, which makes pycocoevalcap pair
  every later caption of the corpus with the wrong tokens (a bug we do not reproduce). An SGML
  tag whose quoted attribute value runs over into the next caption has the same effect in Java;
  we never let a token cross a caption boundary.
* Character classes use the Unicode database of the running Python (CoreNLP 3.4.1 was built
  with the JDK of 2014), so characters assigned since may be classified differently.
* Lower-casing is Python's ``str.lower`` except for capital sigma, whose final/non-final form
  follows Java's rule with an approximation of Java's word boundaries.
* Characters outside the Basic Multilingual Plane (emoji) are split into UTF-16 surrogates as
  in Java, which deletes them as untokenizable; inside URLs and e-mail addresses both keep them.
* The PTBLexer rules were re-created from the CoreNLP sources (2009 and 2017 versions bracket
  3.4.1) and black-box tests against the 3.4.1 jar (hundreds of thousands of random captions and
  character soups agree); rarely used rules (phone numbers, URLs, e-mail addresses, SGML,
  emoticons) may still differ on inputs that were not tried.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import cache

# Tokens pycocoevalcap removes after tokenisation (pycocoevalcap/tokenizer/ptbtokenizer.py).
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-",
     "--", "...", ";"]
)

# --------------------------------------------------------------------------------------------
# Character classes (bodies of [...] sets)
# --------------------------------------------------------------------------------------------


def _class_body(codes: list[int]) -> str:
    """A regex character-class body for sorted code points (as ranges)."""
    parts: list[str] = []
    for start, end in _runs_of(codes):
        parts.append(re.escape(chr(start)) if start == end else
                     f"{re.escape(chr(start))}-{re.escape(chr(end))}")
    return "".join(parts)


def _runs_of(codes: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1] = (runs[-1][0], code)
        else:
            runs.append((code, code))
    return runs


@cache
def _unicode_classes() -> tuple[str, str]:
    """(alphanumerics that are neither letters nor decimal digits, upper-case letters), BMP.

    Letters are written ``(?![<first>])[^\\W\\d_]``: Python's ``\\w`` also holds numeric
    characters such as ``²`` or ``½``, which Java's ``Character.isLetter`` rejects. Spelling
    all letters out as one class would make the rule regexes ~30x slower to compile.
    """
    numeric, upper = [], []
    for code in range(0x10000):
        ch = chr(code)
        if ch.isalnum() and not ch.isdecimal():
            category = unicodedata.category(ch)
            if category == "Lu":
                upper.append(code)
            elif category[0] != "L":
                numeric.append(code)
    return _class_body(numeric), _class_body(upper)


# --------------------------------------------------------------------------------------------
# Token normalisations (the lexer's actions)
# --------------------------------------------------------------------------------------------

_LEFT_SINGLE = re.compile("[\u0091\u2018\u201b\u2039]")
_RIGHT_SINGLE = re.compile("[\u0092\u2019\u203a]")
_LEFT_DOUBLE = re.compile("[\u0093\u201c\u00ab]")
_RIGHT_DOUBLE = re.compile("[\u0094\u201d\u00bb]")
_AMP = re.compile("&amp;", re.IGNORECASE)
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$",
             "\u20ac": "$"}


def _latex_quotes(text: str, probably_left: bool) -> str:
    if probably_left:
        text = text.replace("&apos;", "`").replace("'", "`")
        text = text.replace('"', "``").replace("&quot;", "``")
    else:
        text = text.replace("&apos;", "'")
        text = text.replace('"', "''").replace("&quot;", "''")
    text = _LEFT_SINGLE.sub("`", text)
    text = _RIGHT_SINGLE.sub("'", text)
    text = _LEFT_DOUBLE.sub("``", text)
    return _RIGHT_DOUBLE.sub("''", text)


def _soft_hyphens(text: str) -> str:
    text = text.replace("\u00ad", "")
    return text or "-"


def _parens(text: str) -> str:
    return text.replace("(", "-LRB-").replace(")", "-RRB-")


_ACTIONS: dict[str, Callable[[str], str]] = {
    "keep": lambda t: t,
    "word": _soft_hyphens,
    "left_quote": lambda t: _latex_quotes(t, True),
    "right_quote": lambda t: _latex_quotes(t, False),
    "mdash": lambda t: "--",
    "hyphens": lambda t: "--" if 3 <= len(t) <= 4 else t,
    "amp": lambda t: _AMP.sub("&", t),
    "nbsp": lambda t: t.replace(" ", "\u00a0"),
    "phone": lambda t: _parens(t.replace(" ", "\u00a0")),
    "smiley": _parens,
    "fraction": lambda t: _FRACTIONS.get(t, t),
    "currency": lambda t: _CURRENCY.get(t, t),
    "ellipsis": lambda t: "...",
    "lt": lambda t: "<",
    "gt": lambda t: ">",
    "lrb": lambda t: "-LRB-",
    "rrb": lambda t: "-RRB-",
    "lsb": lambda t: "-LSB-",
    "rsb": lambda t: "-RSB-",
    "lcb": lambda t: "-LCB-",
    "rcb": lambda t: "-RCB-",
}
# Actions that give back characters to the input (JFlex ``yypushback``); see ``_Lexer.lex``.
_PUSHBACK = {"assim3": 3, "assim2": 2, "abbrev1": 1, "acronym": 1}
_SKIP = ("skip", "untokenizable")


# --------------------------------------------------------------------------------------------
# The rules, in JFlex priority order
# --------------------------------------------------------------------------------------------

# Capitalised words after which "X." / "U.S." is taken to end a sentence (first letter
# case-sensitive, the rest caseless, as ``[T]he`` in the JFlex source).
_ACRONYM_NEXT_WORDS = (
    "About", "According", "Additionally", "After", "An", "A", "As", "At", "But", "Earlier", "He",
    "Her", "Here", "However", "If", "In", "It", "Last", "Many", "More", "Mr.", "Ms.", "Now", "Once",
    "One", "Other", "Our", "She", "Since", "So", "Some", "Such", "That", "The", "Their", "Then",
    "There", "These", "They", "This", "We", "When", "While", "What", "Yet", "You",
)


def _ci(alternatives: str) -> str:
    """JFlex ``%caseless`` for literal strings (ASCII case folding only, not for classes)."""
    return f"(?ai:{alternatives})"


def _acronym_next_words() -> str:
    words = sorted(_ACRONYM_NEXT_WORDS, key=len, reverse=True)
    return "|".join(w[0] + (_ci(re.escape(w[1:])) if len(w) > 1 else "") for w in words)


def _rules() -> list[tuple[str, str | tuple[str, ...], str | None, str]]:
    """(name, head regex, trailing-context regex or None, action) in JFlex rule order."""
    numeric, uppercase = _unicode_classes()
    upper = f"[{uppercase}]"
    letter_extra = (
        "\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d"
        "\u0384\u0385\u03cf\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525"
        "\u055a-\u055f\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0615-\u061a\u063b-\u063f"
        "\u064b-\u065e\u0670\u06d6-\u06ef\u06fa-\u06ff\u070f\u0711\u0730-\u074f\u0750-\u077f"
        "\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903\u093c\u093e-\u094e\u0951-\u0955\u0962-\u0963"
        "\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd\u09d7\u09e2\u09e3\u0a01-\u0a03\u0a3c"
        "\u0a3e-\u0a4f\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2\u0bc6-\u0bc8\u0bca-\u0bcd"
        "\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48\u0e30-\u0e3a\u0e47-\u0e4e"
        "\u0eb1-\u0ebc\u0ec8-\u0ecd"
    )
    L = f"(?:(?![{numeric}])[^\\W\\d_])"  # JFlex [:letter:]
    D = r"\d"  # {DIGIT}: [:digit:] (Unicode Nd, which includes U+07C0-U+07C9)
    LD = f"(?:(?![{numeric}])[^\\W_])"  # [:letter:]|[:digit:]
    splet = "&[aeiouAEIOU]" + _ci("acute|grave|uml") + ";"
    letter = f"(?:{L}|[{letter_extra}]|{splet})"
    word = f"{letter}(?:{letter}|{D})*(?:[.!?]{letter}(?:{letter}|{D})*)*"
    space = "[ \t\u00a0\u2000-\u200a\u3000]"
    newline = "(?:\r\n|[\r\n\u2028\u2029\u000b\u000c\u0085])"
    spacenl = f"(?:{space}|{newline})"
    name = r"[A-Za-z][A-Za-z0-9_:.\-]*"
    sgml = (rf"<(?:[!?][A-Za-z\-][^>\r\n]*|{name}(?:[ ]+(?:{name}[ ]*=[ ]*(?:'[^'\r\n]*'|"
            rf"\"[^\"\r\n]*\")|{name}))*[ ]*\/?|\/{name})[ ]*>")
    apos = "(?:['\u0092\u2019]|" + _ci("&apos;") + ")"
    aposetc = f"(?:{apos}|[`\u0091\u2018\u201b])"
    num = f"(?:{D}*(?:[.:,\u00ad\u066b\u066c]{D}+)+|{D}+)"
    acro = ("(?:[A-Za-z](?:\\.[A-Za-z])+|" + _ci("canada|sino|korean|eu|japan|non")
            + "-" + _ci("u\\.s") + "|" + _ci("u\\.s\\.-") + _ci("u\\.k|u\\.s\\.s\\.r") + ")")
    hyphen = "[-_\u058a\u2010\u2011]"
    thing_part = f"(?:[dDoOlL]{aposetc}{LD})?{LD}+"
    thing = f"{thing_part}(?:{hyphen}{thing_part})*"
    thing3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?\/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
    hthing = (f"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:{acro}\\.|[A-Za-z0-9\u00ad]+))+")
    thinga = "[A-Z]+(?:(?:" + _ci("&amp;") + "|[+&])[A-Z]+)+"  # longer alternative first
    redaux = f"{apos}(?:[msdMSD]|{_ci('re|ve|ll')})"
    sword = "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
    sredaux = f"{_ci('n')}{aposetc}{_ci('t')}"
    insentp = "[,;:\u3001]"
    ab_month = "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
    ab_days = "mon|tue|tues|wed|thu|thurs|fri"
    # "[A]z" in JFlex: that first letter is case-sensitive, the rest of the literal is not.
    ab_state = "|".join(
        (w[1] + _ci(w[3:]) if w.startswith("[") else _ci(w))
        for w in ("ala", "ariz", "[A]z", "[A]rk", "calif", "colo", "conn", "ct", "dak", "[D]el",
                  "fla", "ga", "[I]ll", "ind", "kans?", "ky", "[L]a", "[M]ass", "md", "mich",
                  "minn", "[M]iss", "mo", "mont", "neb", "nev", "okla", "[O]re", "[P]a", "penn",
                  "tenn", "[T]ex", "va", "vt", "[W]ash", "wisc?", "wyo"))
    ab_comp = _ci("inc|cos?|corp") + "|" + _ci("pp?t") + "[ye]" + _ci("s?") + "|" + _ci(
        "ltd|plc|rt|bancorp|dept|bhd|assn|univ|intl|sys")
    ab_num = _ci("tel|est|ext|sq")
    ab_ptit = _ci("jr|sr|bros|(?:ed|ph)\\.d|blvd|rd|esq")
    abbrev1 = (f"(?:{_ci(ab_month)}|{_ci(ab_days)}|{ab_state}|{ab_comp}|{ab_num}|{ab_ptit}|"
               + _ci("etc|al|seq|bldg") + ")\\.")
    ab_title = _ci(
        "mr|mrs|ms|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|"
        "cpl|pvt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|mt|ft|adj|adv|asst|"
        "assoc|ens|insp|mlle|mme|msgr|sfc") + "|M" + _ci("iss")
    ab_comp2 = _ci("invt|elec|natl") + "|" + _ci("m") + "[ft]" + _ci("g")
    abbrev4 = (f"(?:{acro}|{ab_title}|" + _ci("vs|alex|wm|jos|cie|a\\.k\\.a|cf|treas|ph")
               + f"|{ab_comp2}|[A-Za-z])")
    abbrev3 = _ci("ca|figs?|prop|nos?|art|bldg|pp|op") + "\\."
    acronym = f"(?:[A-Za-z](?:\\.[A-Za-z])*|{acro})\\."
    phone = (r"(?:\([0-9]{2,3}\)[ \u00a0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00a0])?[0-9]{2,4}"
             r"[\- \u00a0])[0-9]{3,4}[\- \u00a0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?"
             r"[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}")
    filename_ext = _ci(
        "bat|bmp|bz2|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|"
        "mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip")
    filename = f"{LD}+(?:\\.{LD}+)*\\.{filename_ext}"
    quotes_set = ("[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f"
                  "\u2039\u203a\u00ab\u00bb]")
    misc_symbol = (
        "[+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7"
        "\u00f7\u0387\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614"
        "\u061b\u061e\u066a\u066d\u0703-\u070d\u07f6\u07f7\u07f8\u0964\u0965\u0e4f\u1fbd\u2016"
        "\u2017\u2020-\u2023\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e"
        "\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20"
        "\uff3b-\uff40\uff5b-\uff65]"
    )
    fulluri_body = r"[^ \t\n\f\r\"<>|()]"
    fulluri_end = r"[^ \t\n\f\r\"<>|.!?(){},\-]"
    url_host = r"[^ \t\n\f\r\"<>|.!?(){},]+"
    # ",-_" is a range in JFlex as in Python: it excludes digits and upper-case letters.
    url_name = r"[^ \t\n\f\r\"`'<>|.!?(){},-_$]+"
    url_path = r"(?:\/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},\-])?"
    likelyurl = (f"(?:{_ci('www')}\\.(?:{url_host}\\.)+[a-zA-Z]{{2,4}}|(?:{url_name}\\.)+"
                 f"{_ci('com|net|org|edu')}){url_path}")
    email = ("(?:" + _ci("&lt;") + r"|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|(){}\u00a0]*@"
             r"(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*[^ \t\n\f\r\"<>|(){}.\u00a0]+"
             "(?:" + _ci("&gt;") + "|>)?")

    return [
        ("prog_langs", _ci("c\\+\\+|[cf]#"), None, "keep"),
        ("assim3", _ci("cannot|'twas"), None, "assim3"),
        ("assim2", _ci("'tis|gonna|gotta|lemme|gimme|wanna"), None, "assim2"),
        ("sgml", sgml, None, "nbsp"),
        ("spmdash", "&" + _ci("md|mdash|ndash") + ";|[\u0096\u0097\u2013\u2014\u2015]", None,
         "mdash"),
        ("spamp", _ci("&amp;"), None, "amp"),
        ("sppunc", "&" + _ci("ht|tl|ur|lr|qc|ql|qr|odq|cdq|#[0-9]+") + ";", None, "keep"),
        ("word_redaux", word, redaux, "word"),
        ("sword_sredaux", sword, sredaux, "word"),
        ("word", word, None, "word"),
        ("apoword_n", f"{apos}{_ci('n')}{apos}?", None, "keep"),
        ("apoword_l", f"[lLdDjJ]{apos}", None, "keep"),
        ("apoword_in", _ci("dunkin|somethin|ol") + apos, None, "keep"),
        ("apoword_em", apos + _ci("em"), None, "keep"),
        ("apoword_cap", f"[A-HJ-XZn]{aposetc}{L}{{2}}{L}*", None, "keep"),
        ("apoword_0s", f"{apos}[2-9]0{_ci('s')}", None, "keep"),
        ("apoword_till", apos + _ci("till?"), None, "keep"),
        ("apoword_vowel", f"{L}+[aeiouyAEIOUY]{aposetc}[aeiouA-Z]{L}*", None, "keep"),
        ("apoword_cause", apos + _ci("cause"), None, "keep"),
        ("apoword_words", _ci("cont'd\\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l"), None,
         "keep"),
        ("apoword_o", _ci("o") + aposetc + _ci("o"), None, "keep"),
        ("apoword2", _ci("y") + apos, L, "keep"),
        ("fullurl", _ci("https?") + f":\\/\\/{fulluri_body}+{fulluri_end}", None, "keep"),
        ("likelyurl", likelyurl, None, "keep"),
        ("email", email, None, "keep"),
        ("twitter", f"@[a-zA-Z_][a-zA-Z_0-9]*|#{letter}+", None, "keep"),
        ("redaux_ctx", redaux, "[^A-Za-z]", "right_quote"),
        ("sredaux", sredaux, None, "right_quote"),
        ("date", f"{D}{{1,2}}[\\-\\/]{D}{{1,2}}[\\-\\/]{D}{{2,4}}", None, "keep"),
        ("number", f"[\\-+]?{num}", None, "word"),
        ("subsupnum", "[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|"
         "[\u2080-\u2089]+)", None, "keep"),
        ("frac", f"(?:{D}{{1,4}}[- \u00a0])?{D}{{1,4}}(?:\\\\?\\/|\u2044){D}{{1,4}}", None, "nbsp"),
        ("frac2", "[\u00bc\u00bd\u00be\u2153-\u215e]", None, "fraction"),
        ("tbspec", "-(?:" + _ci("rrb|lrb|rcb|lcb|rsb|lsb") + ")-|" + _ci("c\\.d\\.s|pro-|anti-")
         + "|" + _ci("s(?:&|&amp;)p-500|s(?:&|&amp;)ls") + "|" + _ci("cap") + apos + _ci("n")
         + "|" + _ci("c") + apos + _ci("est"), None, "amp"),
        ("thing3", thing3, None, "keep"),
        ("dolsign", r"[A-Z]*\$|#", None, "keep"),
        ("dolsign2", "[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1"
         "\uffe5\uffe6]", None, "currency"),
        ("acronym", acronym,
         f"{spacenl}+(?:{_acronym_next_words()}|{sgml}){spacenl}", "acronym"),
        ("abbrev3", abbrev3, f"{spacenl}?{D}", "keep"),
        ("pty", "(?:" + _ci("pt") + "[eyEY]|" + _ci("co") + ")\\.", f"{space}{_ci('ltd|lim')}",
         "keep"),
        ("abbrev1_end", abbrev1,
         f"{spacenl}(?:{spacenl}|{upper}|{sgml})", "abbrev1"),
        ("abbrev1_any", abbrev1, "(?s:..)", "keep"),
        ("abbrev1", abbrev1, None, "keep"),
        ("abbrev2", f"{abbrev4}\\.", None, "keep"),
        ("abbrev4", abbrev4, space, "keep"),
        ("acro", f"[A-Za-z](?:\\.[A-Za-z])+|{acro}", spacenl, "keep"),
        ("tbspec2", f"{apos}[0-9][0-9]", spacenl, "keep"),
        ("filename", filename, f"(?:{spacenl}|[.?!,])", "keep"),
        ("word_dot", f"{word}\\.", insentp, "word"),
        ("phone", phone, None, "phone"),
        ("dblquote_left", '"|' + _ci("&quot;"), "[A-Za-z0-9$]", "left_quote"),
        ("dblquote", '"|' + _ci("&quot;"), None, "right_quote"),
        ("del", "\u007f", None, "skip"),
        ("lt", "<|" + _ci("&lt;"), None, "lt"),
        ("gt", ">|" + _ci("&gt;"), None, "gt"),
        ("smiley", r"[<>]?[:;=][\-o\*']?[\(\)DPdpO\\{@\|\[\]]", "[^A-Za-z0-9]", "smiley"),
        ("asiansmiley", r"[\^x=~<>]\.\[\^x=~<>]|[\-\^x=~<>']_[\-\^x=~<>']|"
         r"\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)|\([\^x=~<>']-[\^x=~<>'`]\)", None, "smiley"),
        ("lcb", r"\{", None, "lcb"),
        ("rcb", r"\}", None, "rcb"),
        ("lsb", r"\[", None, "lsb"),
        ("rsb", r"\]", None, "rsb"),
        ("lrb", r"\(", None, "lrb"),
        ("rrb", r"\)", None, "rrb"),
        ("hyphens", "-+", None, "hyphens"),
        ("ldots", "\\.{3,5}|(?:\\.[ \u00a0]){2,4}\\.|[\u0085\u2026]", None, "ellipsis"),
        ("fnmarks", "@+|#+|_+", None, "keep"),
        ("asts", r"\*+|(?:\\\*){1,3}", None, "keep"),
        ("insentp", insentp, None, "keep"),
        ("bang", "[?!]+", None, "keep"),
        ("period", "[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]", None,
         "keep"),
        ("equals", "=", None, "keep"),
        ("slash", r"\/", None, "keep"),
        ("hthing_dot", f"{hthing}\\.", insentp, "word"),
        ("hthing", hthing, None, "word"),
        ("thing_dot", f"{thing}\\.", insentp, "keep"),
        ("thing", thing, None, "keep"),
        ("thinga_dot", f"{thinga}\\.", insentp, "amp"),
        ("thinga", thinga, None, "amp"),
        ("quote_left", "'", "[A-Za-z][^ \t\n\r\u00a0]", "left_quote"),
        ("redaux", redaux, None, "right_quote"),
        ("quotes", (apos, "''", f"{quotes_set}{{1,2}}"), None, "right_quote"),
        ("fakeduckfeet", "<<|>>", None, "keep"),
        ("miscsymbol", misc_symbol, None, "keep"),
        ("space", f"\u0000|{space}+|[\u200b\u200e\u200f\ufeff]", None, "skip"),
        ("newline", newline, None, "newline"),
        ("nbsp", _ci("&nbsp;"), None, "skip"),
        ("untokenizable", "(?s:.)", None, "untokenizable"),
    ]


# --------------------------------------------------------------------------------------------
# The lexer
# --------------------------------------------------------------------------------------------


_CATEGORIES = {
    "CATEGORY_DIGIT": r"\d", "CATEGORY_UNI_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_UNI_NOT_DIGIT": r"\D", "CATEGORY_WORD": r"\w", "CATEGORY_UNI_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W", "CATEGORY_UNI_NOT_WORD": r"\W", "CATEGORY_SPACE": r"\s",
    "CATEGORY_UNI_SPACE": r"\s", "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_UNI_NOT_SPACE": r"\S",
}


def _atom(op: str, av: object) -> str | None:
    """Regex for one parsed single-character item, or ``None`` if it is not understood."""
    if op == "LITERAL":
        return re.escape(chr(av))  # type: ignore[arg-type]
    if op == "NOT_LITERAL":
        return f"[^{re.escape(chr(av))}]"  # type: ignore[arg-type]
    if op == "ANY":
        return "(?s:.)"
    parts = []
    for item_op, item in av:  # type: ignore[attr-defined]
        name = str(item_op)
        if name == "NEGATE":
            parts.append("^")
        elif name == "LITERAL":
            parts.append(re.escape(chr(item)))
        elif name == "RANGE":
            parts.append(f"{re.escape(chr(item[0]))}-{re.escape(chr(item[1]))}")
        elif name == "CATEGORY" and str(item) in _CATEGORIES:
            parts.append(_CATEGORIES[str(item)])
        else:
            return None
    return f"[{''.join(parts)}]"


def _first_atoms(items: object, ignorecase: bool = False) -> tuple[list[str] | None, bool]:
    """(regexes for the characters a match of the parsed regex may start with, or ``None``
    for "any"; whether it may match the empty string). Errs towards "may"."""
    atoms: list[str] = []
    for op, av in items:  # type: ignore[attr-defined]
        name = str(op)
        if name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        if name == "SUBPATTERN":
            found, nullable = _first_atoms(av[3], ignorecase or bool(av[1] & re.IGNORECASE))
        elif name == "BRANCH":
            results = [_first_atoms(alt, ignorecase) for alt in av[1]]
            found = None if any(r[0] is None for r in results) else [
                atom for r in results for atom in r[0]]  # type: ignore[union-attr]
            nullable = any(r[1] for r in results)
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            found, nullable = _first_atoms(av[2], ignorecase)
            nullable = nullable or av[0] == 0
        elif name in ("LITERAL", "NOT_LITERAL", "IN", "ANY"):
            atom = _atom(name, av)
            found = None if atom is None else [f"(?i:{atom})" if ignorecase else atom]
            nullable = False
        else:
            return None, True
        if found is None:
            return None, True
        atoms += found
        if not nullable:
            return atoms, False
    return atoms, True


def _first_char_pattern(regex: str) -> re.Pattern[str] | None:
    """A pattern matching every character a match of ``regex`` may start with (``None``: any).

    Uses the standard library's regex parser (a private module); if that ever changes, every
    rule is simply tried everywhere.
    """
    try:
        from re import _parser  # type: ignore[attr-defined]

        atoms, nullable = _first_atoms(_parser.parse(regex))
        return None if atoms is None or nullable else re.compile("|".join(dict.fromkeys(atoms)))
    except Exception:  # pragma: no cover - depends on the private module
        return None


# An ASCII word followed by a space, ")", "}", '"' or the end: every rule agrees that
# this is one token, except the assimilations ("gonna" -> "gon na") -- a shortcut for the lexer.
_PLAIN_WORD = re.compile(r"[A-Za-z]+(?=[ \t\n)}\"]|,[ \t\n]|,?\Z)")
_ASSIMILATED = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])


class _Lexer:
    """JFlex-style longest match over the rules, trailing contexts counting towards the length.

    At each position only the rules that may start with the character there are tried (found
    from the parsed rule regexes); each rule is compiled on first use.
    """

    def __init__(self) -> None:
        self._heads: list[str] = []
        self._tails: list[str] = []
        self._actions: list[str] = []
        # A rule whose head is a tuple of alternatives becomes one entry per alternative (same
        # action, consecutive priority): Python's ``re`` takes the first alternative that
        # matches, JFlex the longest.
        for _, heads, tail, action in _rules():
            for head in (heads,) if isinstance(heads, str) else heads:
                self._heads.append(head)
                self._tails.append(tail or "")
                self._actions.append(action)
        self._first: list[re.Pattern[str] | None] | None = None
        self._compiled: list[re.Pattern[str] | None] = [None] * len(self._heads)
        self._by_char: dict[str, list[tuple[int, re.Pattern[str], bool]]] = {}

    def _pattern(self, rule: int) -> re.Pattern[str]:
        pattern = self._compiled[rule]
        if pattern is None:
            head, tail = self._heads[rule], self._tails[rule]
            pattern = re.compile(f"({head}){tail}" if tail else head)
            self._compiled[rule] = pattern
        return pattern

    def _candidates(self, ch: str) -> list[tuple[int, re.Pattern[str], bool]]:
        """The rules that may match at a position holding ``ch``, in priority order."""
        if self._first is None:
            self._first = [_first_char_pattern(head) for head in self._heads]
        found = [(rule, self._pattern(rule), bool(self._tails[rule]))
                 for rule, first in enumerate(self._first) if first is None or first.match(ch)]
        self._by_char[ch] = found
        return found

    def lex(self, text: str, stop: int) -> list[str]:
        """Raw tokens of ``text[:stop]``; the rest of ``text`` is only right context."""
        tokens: list[str] = []
        pos = 0
        actions = self._actions
        by_char = self._by_char
        plain_word = _PLAIN_WORD.match
        while pos < stop:
            word = plain_word(text, pos)
            if word is not None and word.group().lower() not in _ASSIMILATED:
                tokens.append(word.group())
                pos = word.end()
                continue
            best, best_end, best_match, best_tail = -1, -1, None, False
            for rule, pattern, has_tail in by_char.get(text[pos]) or self._candidates(text[pos]):
                match = pattern.match(text, pos)
                if match is not None and match.end() > best_end:
                    best, best_end, best_match, best_tail = rule, match.end(), match, has_tail
            token = best_match.group(1) if best_tail else best_match.group()  # type: ignore[union-attr]
            action = actions[best]
            pos += len(token)
            if action in _SKIP or action == "newline":
                continue
            if action in _PUSHBACK:
                pos -= _PUSHBACK[action]
                if action.startswith("assim"):
                    token = token[: -_PUSHBACK[action]]
                elif action == "acronym" and len(token) == 2:
                    token = token[0]
                tokens.append(token)
            else:
                tokens.append(_ACTIONS[action](token))
        return tokens


@cache
def _lexer() -> _Lexer:
    return _Lexer()


def raw_tokens(text: str, context: str | None = None) -> list[str]:
    """PTBLexer tokens of one line (original case, punctuation kept), for debugging and tests.

    ``context`` is the next line of the stream (``None``: end of file).
    """
    full = text if context is None else f"{text}\n{context}"
    return _lexer().lex(_to_utf16(full), len(_to_utf16(text)))


def _to_utf16(text: str) -> str:
    """Spell astral characters as surrogate pairs: the Java lexer works on UTF-16 code units."""
    if text.isascii() or all(ord(ch) < 0x10000 for ch in text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x10000:
            out.append(ch)
        else:
            code -= 0x10000
            out.append(chr(0xD800 + (code >> 10)) + chr(0xDC00 + (code & 0x3FF)))
    return "".join(out)


def _from_utf16(token: str) -> str:
    if token.isascii():
        return token
    return token.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _is_cased(ch: str) -> bool:
    return unicodedata.category(ch) in ("Lu", "Ll", "Lt")


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def _joins(left: str, mid: str, right: str) -> bool:
    """Whether ``mid`` between two word characters keeps them in one word (Java BreakIterator,
    approximately)."""
    if mid not in "-'\"._\u2013" or not (_is_word_char(left) and _is_word_char(right)):
        return False
    return left.isdigit() == right.isdigit()


def _word_around(token: str, i: int) -> tuple[str, str]:
    """The parts of the word containing ``token[i]`` before and after it."""
    start = i
    while start > 0 and (_is_word_char(token[start - 1]) or (
            start > 1 and _joins(token[start - 2], token[start - 1], token[start]))):
        start -= 1
    end = i + 1
    while end < len(token) and (_is_word_char(token[end]) or (
            end + 1 < len(token) and _joins(token[end - 1], token[end], token[end + 1]))):
        end += 1
    return token[start:i], token[i + 1 : end]


def _java_lower(token: str) -> str:
    """``String.toLowerCase(Locale.ENGLISH)``: ``str.lower`` except for capital sigma.

    Java writes final sigma when a cased letter precedes the sigma and none follows it within
    the same word (``java.text.BreakIterator`` words, approximated here); Python's context rule
    differs around digits and punctuation.
    """
    if "\u03a3" not in token:
        return token.lower()
    out = []
    for i, ch in enumerate(token):
        if ch == "\u03a3":
            before, after = _word_around(token, i)
            final = any(map(_is_cased, before)) and not any(map(_is_cased, after))
            out.append("\u03c2" if final else "\u03c3")
        else:
            out.append(ch.lower())
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Stream tokenisation with a per-chunk fast path
# --------------------------------------------------------------------------------------------

# Line breaks of the Java lexer other than "\n" (which pycocoevalcap replaces by a space): Java
# would start a new output line there; we use a space (see the module docstring).
_LINE_BREAKS = re.compile("[\n\r\u000b\u000c\u2028\u2029]")

# Characters str.split() or the Java lexer treat as spaces, astral characters (UTF-16 pairs in
# Java) and SGML tags (which may contain spaces): captions with these are lexed as a whole.
_WHOLE_LINE = re.compile(
    "[\u000b\u000c\r\u001c-\u001f\u0085\u00a0\u1680\u2000-\u200f\u2028\u2029\u202f\u205f"
    "\u3000\ufeff\U00010000-\U0010ffff<]"
)
# Places where a token or a lexer context may reach from one whitespace-separated chunk into the
# next: such chunks are lexed together (see ``_gap_is_risky``).
_RISKY_GAP = re.compile(
    r"[\d)][ \t]+\d"  # "5 7/8", "(555) 555-1234", "555 555 5555"
    # ". . .", "no. 5", "PTY. Ltd", "plan A. The" (only "X." matters, see _gap_is_risky)
    r"|\.[ \t]+(?:[.\dA-Z]|(?ai:ltd|lim))"
)
_SPACES = re.compile(r"([ \t]+)")
# A letter and a dot that may be a token of their own: no letter before (after a digit, a
# token such as "5 7/8" may have ended just before the letter).
_SINGLE_LETTER_DOT = re.compile(r"(?:\A|[^A-Za-z])[A-Za-z]\.\Z")
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_STARTS_CAPITAL = re.compile(r"[ \t\n]*[A-Z<]")

_CACHE_LIMIT = 200_000  # entries per cache; cleared when full
# Output (space-joined, lower-cased, punctuation removed) of chunks lexed on their own: a chunk
# followed by a space, and a line's last chunk followed by a newline.
_chunk_cache: dict[str, str] = {}
_final_chunk_cache: dict[str, str] = {}


def _finish(tokens: list[str]) -> str:
    """Lower-case like Java, drop coco's punctuation tokens, join with spaces."""
    lowered = (_java_lower(_from_utf16(token)) for token in tokens)
    return " ".join(token for token in lowered if token not in PUNCTUATIONS)


def _lex_chunk(chunk: str, final: bool = False) -> str:
    """Output for a piece of a line that no token or lexer context crosses, followed by a space
    (or by a newline when ``final``), through a cache."""
    cache = _final_chunk_cache if final else _chunk_cache
    text = cache.get(chunk)
    if text is None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        text = _finish(_lexer().lex(chunk + ("\n" if final else " "), len(chunk)))
        cache[chunk] = text
    return text


def _gap_is_risky(left: str, right: str) -> bool:
    """Whether lexing ``left`` and ``right`` (separated by spaces or tabs) apart may differ from
    lexing them together. Mirrors ``_RISKY_GAP``."""
    last, first = left[-1], right[0]
    if first.isdecimal():
        return last == ")" or last == "." or last.isdecimal()
    if last != ".":
        return False
    return (first == "." or right[:3].lower() in ("ltd", "lim")
            or ("A" <= first <= "Z" and _SINGLE_LETTER_DOT.search(left) is not None))


def _segments(text: str) -> list[str]:
    """``text`` cut at the spaces/tabs that no token or lexer context can cross."""
    parts = _SPACES.split(text.strip(" \t"))
    segments = [parts[0]]
    for k in range(1, len(parts) - 1, 2):
        if _gap_is_risky(parts[k - 1], parts[k + 1]):
            segments[-1] += parts[k] + parts[k + 1]
        else:
            segments.append(parts[k + 1])
    return segments


def _ends_like_acronym(text: str) -> bool:
    """``text`` ends with a one-letter "acronym" such as ``A.`` (then spaces or tabs)."""
    text = text.rstrip(" \t")
    return (len(text) >= 2 and text[-1] == "." and text[-2] in _ASCII_LETTERS
            and (len(text) == 2 or text[-3] not in _ASCII_LETTERS))


def _needs_whole_line(text: str, next_text: str | None) -> bool:
    """Whether the line must go through the lexer as a whole, ``next_text`` (what follows the
    line break, see ``_right_context``) as right context."""
    if next_text is None:
        return True  # the end of the stream has its own contexts
    if text.isascii():
        if "<" in text or (not text.isprintable() and _WHOLE_LINE.search(text)):
            return True
    elif _WHOLE_LINE.search(text):
        return True
    if text.endswith("."):  # "no." + "5 ...", "plan A." + "The ..."
        if next_text[:1].isdecimal():
            return True
    elif not text.endswith((" ", "\t")):
        return False
    return _ends_like_acronym(text) and _STARTS_CAPITAL.match(next_text) is not None


def _tokenize_line(text: str, next_text: str | None) -> str:
    if _needs_whole_line(text, next_text):
        stream = _to_utf16(text if next_text is None else f"{text}\n{next_text}")
        return _finish(_lexer().lex(stream, len(_to_utf16(text))))
    chunks = _segments(text) if _RISKY_GAP.search(text) else text.split()
    if not chunks or not chunks[-1]:
        return ""
    last = chunks.pop()
    get = _chunk_cache.get
    parts = [get(chunk) or _lex_chunk(chunk) for chunk in chunks]
    parts.append(_final_chunk_cache.get(last) or _lex_chunk(last, final=True))
    return " ".join(filter(None, parts))


def _clean(caption: str) -> str:
    if caption.isascii() and caption.isprintable():
        return caption
    return _LINE_BREAKS.sub(" ", caption)


def tokenize(captions: Sequence[str]) -> list[str]:
    """Space-joined tokens of each caption, the strings pycocoevalcap's PTBTokenizer returns.

    ``captions`` is the stream pycocoevalcap writes (for references: every caption of image 1,
    then of image 2, ...); a caption's last tokens may depend on the start of the next one.
    """
    texts = [_clean(caption) for caption in captions]
    return [_tokenize_line(text, _right_context(texts, i)) for i, text in enumerate(texts)]


def _right_context(texts: list[str], i: int) -> str | None:
    """What the lexer sees after line ``i`` (``None``: end of file): the following lines up to
    the first non-blank one, and the line break after that one, if any."""
    j = i + 1
    if j < len(texts) and texts[j].strip(" \t"):  # the usual case
        return texts[j] + "\n" if j + 1 < len(texts) else texts[j]
    while j < len(texts) and not texts[j].strip(" \t"):
        j += 1
    if j == i + 1:
        return None
    context = "\n".join(texts[i + 1 : j + 1])
    return context + "\n" if j + 1 < len(texts) else context


def tokenize_to_lists(captions: Sequence[str]) -> list[list[str]]:
    """Tokens of each caption (``tokenize`` split at spaces; tokens never contain one)."""
    return [line.split(" ") if line else [] for line in tokenize(captions)]
