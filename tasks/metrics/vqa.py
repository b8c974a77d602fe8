"""The official VQA accuracy (VQA v1/v2, "soft" accuracy over ten human answers).

Replicates ``vqaEval.py`` of https://github.com/GT-Vision-Lab/VQA (master, commit a013f00,
``PythonEvaluationTools/vqaEvaluation/vqaEval.py``) answer for answer, quirks included, so that
numbers are comparable with published results. Behaviour worth knowing:

* Newlines/tabs become spaces and the answer is stripped, always.
* Punctuation, number-word, article and contraction normalisation is applied to the prediction
  and to the human answers **only when the human answers disagree** (``len(set(answers)) > 1``
  after the whitespace step). When all humans gave the same string (e.g. ten times ``"yes"``),
  the prediction must equal it exactly: ``"Yes"`` or ``"yes."`` scores 0. The maintainers keep
  this on purpose (unanimous answers are often OCR text that must not be altered).
* The period strip removes at most 32 periods per answer: the official script passes
  ``re.UNICODE`` (== 32) as the ``count`` argument of ``re.sub``.
* Capitalised contraction keys ("Im", "Ive", ...) can never match (text is lower-cased first).
* A question's accuracy is the mean, over each human answer left out in turn, of
  ``min(#other humans that gave the prediction / 3, 1)``. With one human answer it is always 0.

Deliberate differences from the official script: values are fractions in [0, 1], unrounded
(the script reports percentages rounded to 2 decimals), and inputs are never mutated (the script
rewrites the annotation dicts in place, so evaluating twice changes its results).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.metrics.base import MetricResult, register_metric, safe_key_part
from tasks.stats.estimates import mean

# --- normalisation tables of the official script (master), same content, reformatted ---

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
# "(?!<=\d)" is the official typo for a look-behind; as written it never blocks a match, so the
# pattern removes every "." not followed by a digit. Kept verbatim for parity.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_OFFICIAL_PERIOD_COUNT = re.UNICODE.value  # 32: passed as re.sub's ``count`` by the script


# --- answer normalisation ---


def clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then strip: applied to every answer."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """``processPunctuation``: drop or space out punctuation, then strip periods.

    A mark is deleted when it touches a space anywhere in the answer (or when the answer holds a
    digit-comma-digit group such as "1,000"), else replaced by a space.
    """
    delete_all = _COMMA_STRIP.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        delete = delete_all or f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if delete else " ")
    return _PERIOD_STRIP.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """``processDigitArticle``: lower-case, number words to digits, drop articles, contractions."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """Full normalisation (whitespace, punctuation, digits/articles/contractions)."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


# --- accuracy ---


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official accuracy of one prediction against the human answers, in [0, 1].

    Hand-checked: with 10 answers of which ``m`` equal the prediction, leaving out a matching
    answer leaves ``m - 1`` matches, leaving out another leaves ``m``. ``m = 3`` gives
    (3 * 2/3 + 7 * 1) / 10 = 0.9; ``m = 4`` gives 1.0; ``m = 1`` gives (0 + 9 * 1/3) / 10 = 0.3.
    """
    gts = [clean_whitespace(a) for a in answers]
    pred = clean_whitespace(prediction)
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        pred = process_digit_article(process_punctuation(pred))
    matches = sum(gt == pred for gt in gts)
    # Same float operations, in the same order, as the script: exact parity after rounding.
    per_left_out = [min(1, float(matches - (gt == pred)) / 3) for gt in gts]
    return float(sum(per_left_out)) / len(per_left_out)


@dataclass
class VQAInputs:
    """Open-ended VQA predictions with their human answers (normally ten per question).

    ``question_types`` / ``answer_types`` (optional, aligned with ``ids``) give per-type
    accuracies; a ``None`` entry leaves that question out of the per-type breakdown only.
    """

    ids: list[str]
    predictions: list[str]
    answers: list[list[str]]
    question_types: list[str | None] | None = None
    answer_types: list[str | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("predictions", "answers", "question_types", "answer_types"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"VQAInputs: {name} has {len(values)} entries, ids has {n}")
        seen: set[str] = set()
        for qid, answers in zip(self.ids, self.answers, strict=True):
            if qid in seen:
                raise ValueError(f"VQAInputs: duplicate id {qid!r}")
            seen.add(qid)
            if isinstance(answers, str) or len(answers) == 0:
                raise ValueError(f"VQAInputs: question {qid!r} needs a non-empty list of answers")



def _per_type(
    prefix: str, types: Sequence[str | None], accuracies: np.ndarray
) -> tuple[dict[str, float], dict[str, dict[str, object]]]:
    """Mean accuracy per type under ``<prefix>.<safe type>``, plus key -> {type, count}."""
    groups: dict[str, list[int]] = {}
    for i, kind in enumerate(types):
        if kind is not None:
            groups.setdefault(kind, []).append(i)
    values: dict[str, float] = {}
    info: dict[str, dict[str, object]] = {}
    for kind, rows in groups.items():
        key = f"{prefix}.{safe_key_part(kind)}"
        if key in info:
            raise ValueError(f"types {info[key]['type']!r} and {kind!r} both map to key {key!r}")
        # Sum in question order, then divide: the script's own arithmetic.
        values[key] = float(sum(accuracies[rows].tolist())) / len(rows)
        info[key] = {"type": kind, "count": len(rows)}
    return values, info


@register_metric("vqa_accuracy", task="vqa", outputs={"vqa_accuracy": True})
def vqa_accuracy(inputs: VQAInputs) -> MetricResult:
    """Official VQA accuracy (fraction), overall and per answer/question type.

    Corpus keys: ``vqa_accuracy``, ``vqa_accuracy.answer_type.<type>`` and
    ``vqa_accuracy.question_type.<type>`` (types made MLflow-safe by ``safe_key_part``).
    """
    if not inputs.ids:
        return MetricResult.skip("no questions")
    acc = np.array(
        [question_accuracy(p, a) for p, a in zip(inputs.predictions, inputs.answers, strict=True)],
        dtype=np.float64,
    )
    corpus = {"vqa_accuracy": float(sum(acc.tolist())) / len(acc)}
    estimates = {"vqa_accuracy": mean("vqa_accuracy")}
    extra: dict[str, object] = {}
    for label, types in (
        ("answer_type", inputs.answer_types),
        ("question_type", inputs.question_types),
    ):
        if types is not None:
            values, info = _per_type(f"vqa_accuracy.{label}", types, acc)
            corpus.update(values)
            extra[f"{label}s"] = info
            # the per-item table holds the types in a "question_type" / "answer_type" column
            estimates |= {key: mean("vqa_accuracy", where=(label, str(entry["type"])))
                          for key, entry in info.items()}
    single = sum(len(a) < 2 for a in inputs.answers)
    if single:
        extra["warnings"] = [f"{single} question(s) have a single answer: accuracy is always 0"]
    return MetricResult(corpus=corpus, per_sample={"vqa_accuracy": acc}, extra=extra,
                        estimates=estimates)
