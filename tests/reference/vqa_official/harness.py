"""Parity harness for ``tasks.metrics.vqa`` against the official VQA evaluation script.

The official script (``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` of
https://github.com/GT-Vision-Lab/VQA, master commit a013f0043c1e2cdc995922dfe257f7149aa9af06)
is *not* copied into this repository: the GT-Vision-Lab/VQA repository ships no licence file,
so we have no grant to redistribute it. Instead:

* ``expected.json`` (next to this file) holds a seeded corpus and the official script's outputs
  on it (per-question ``evalQA``, ``perAnswerType``, ``perQuestionType``, ``overall``), produced
  by ``python tests/reference/vqa_official/harness.py /path/to/vqaEval.py``.
* ``load_official`` runs an unmodified checkout of the script under Python 3. The only
  adaptation, done in memory, is rewriting its two Python-2 ``print "..."`` statements as
  ``print("...")`` calls. Its ``VQA`` helper class is not needed: ``VQAEval`` only reads
  ``.qa`` and ``.getQuesIds()``, provided here by ``_Annotations``.
  Set ``BIFOCAL_VQA_OFFICIAL=/path/to/vqaEval.py`` to make the tests run it live.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

EXPECTED_PATH = Path(__file__).with_name("expected.json")
SEED = 20240611
N_QUESTIONS = 600

# Surface variants grouped by the answer they should normalise to (or deliberately not).
YES_NO = [
    ["yes", "Yes", "YES", "yes.", "yes!", " yes", "yes\n", "Yes.", "yes?"],
    ["no", "No", "NO", "no.", "No!", "no\t", "nope"],
]
NUMBERS = [
    ["2", "two", "Two", "2.", " 2 ", "TWO", "2!"],
    ["0", "zero", "none", "None", "0."],
    ["10", "ten", "Ten", "10."],
    ["1,000", "1000", "1 000", "1,000.", "one thousand"],
    ["3.5", "3.50", "3,5", "three and half"],
    ["1", "one", "One", "a one", "1 one"],
    ["12:30", "12 30", "12:30.", "12.30"],
]
OTHER = [
    ["red", "Red", "red.", "the red", "RED", "red one", "the red one"],
    ["dog", "a dog", "Dog.", "the dog", "dogs", "an dog"],
    ["black and white", "black & white", "black/white", "black, white", "black-white"],
    ["t-shirt", "t shirt", "tshirt", "T-Shirt", "t - shirt", "t_shirt"],
    ["dont know", "don't know", "Dont know", "dont know.", "I dont know"],
    ["its", "it's", "isnt", "isn't", "Im", "im", "whats", "hes"],
    ["st. louis", "st louis", "St. Louis", "saint louis", "st.louis"],
    ["u.s.a.", "usa", "U.S.A", "us", "u.s."],
    ["mr. smith", "mr smith", "Mr. Smith", "smith"],
    ["hot dog", "hotdog", "hot-dog", "hot dogs", "(hot dog)", "hot dog?"],
    ["left", "left side", "on left", "the left", "left.", "[left]"],
    ["$5", "5 dollars", "5$", "five dollars", "$ 5"],
    ["50%", "50 %", "fifty percent", "50"],
    ["e-mail", "email", "e mail", "E-Mail!"],
    ["coca cola", "coca-cola", "Coca Cola", "coke", "coca_cola"],
    ["frisbee", "Frisbee", "frisbe", "frisbee ", "\tfrisbee"],
    ["a", "the", "an", "A"],
    ["...", ".", "", " ", "?"],
    ["1.5 m", "1.5m", "1.5 meters", "one and half meters"],
    ["half-and-half", "half and half", "half & half"],
    ["@home", "home", "at home", "<home>", "{home}", "home=", "home+"],
    ["x" + "." * 40, "x", "x" + "." * 31, "x" + "." * 33],
]
TYPES = {
    "yes/no": (YES_NO, ["is the", "are there", "is this a", "does the", "is it"]),
    "number": (NUMBERS, ["how many", "what number is", "how many people are", "what time"]),
    "other": (
        OTHER,
        ["what color is the", "what is the", "what", "where is the", "none of the above"],
    ),
}
ANSWER_COUNTS = [10] * 12 + [2, 3, 5, 9, 1]


def _perturb(rng: random.Random, text: str) -> str:
    """Random surface noise on a prediction: case, whitespace, trailing punctuation."""
    choice = rng.randrange(8)
    if choice == 0:
        return text.upper()
    if choice == 1:
        return text.capitalize()
    if choice == 2:
        return text + rng.choice([".", "!", "?", " .", ",", "\n", "\t"])
    if choice == 3:
        return rng.choice(["the ", "a ", "The ", "  "]) + text
    return text


def _answers(rng: random.Random, groups: list[list[str]], count: int) -> list[str]:
    """Human answers: unanimous, one dominant group, or mixed groups and variants."""
    mode = rng.randrange(5)
    if mode == 0:  # unanimous: the official script then skips all normalisation
        return [rng.choice(rng.choice(groups))] * count
    picked = rng.sample(groups, k=min(len(groups), rng.randint(1, 3)))
    if mode == 1:  # one surface form of one group, a few dissenters
        main = rng.choice(picked[0])
        return [
            main if rng.random() < 0.7 else rng.choice(rng.choice(picked)) for _ in range(count)
        ]
    return [rng.choice(rng.choice(picked)) for _ in range(count)]


def build_corpus(seed: int = SEED, n: int = N_QUESTIONS) -> list[dict[str, Any]]:
    """Seeded, varied corpus: dicts of id, prediction, answers, question_type, answer_type."""
    rng = random.Random(seed)
    corpus = []
    for i in range(n):
        answer_type = rng.choice(sorted(TYPES))
        groups, question_types = TYPES[answer_type]
        answers = _answers(rng, groups, rng.choice(ANSWER_COUNTS))
        source = rng.random()
        if source < 0.5:
            prediction = rng.choice(answers)
        elif source < 0.85:
            prediction = rng.choice(rng.choice(groups))
        else:
            prediction = rng.choice(rng.choice(OTHER + NUMBERS + YES_NO))
        corpus.append(
            {
                "id": f"q{i:04d}",
                "prediction": _perturb(rng, prediction),
                "answers": answers,
                "question_type": rng.choice(question_types),
                "answer_type": answer_type,
            }
        )
    return corpus


def load_official(path: str | Path) -> ModuleType:
    """Import the official ``vqaEval.py`` under Python 3 (print statements -> print calls)."""
    source = Path(path).read_text(encoding="utf-8")
    source = re.sub(r"^(\s*)print (\".*\")\s*$", r"\1print(\2)", source, flags=re.MULTILINE)
    module = ModuleType("vqaEval_official")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in its regex literals
        exec(compile(source, str(path), "exec"), module.__dict__)
    return module


class _Annotations:
    """The two attributes of the official ``VQA`` helper class that ``VQAEval`` reads."""

    def __init__(self, qa: dict[int, dict[str, Any]]) -> None:
        self.qa = qa

    def getQuesIds(self) -> list[int]:  # the official (camelCase) name
        return list(self.qa)


def run_official(module: ModuleType, corpus: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluate ``corpus`` with the official ``VQAEval``; per-question results keyed by our ids."""
    gts, res = {}, {}
    for qid, item in enumerate(corpus):
        answers = [
            {"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
            for j, a in enumerate(item["answers"])
        ]  # unique answer_id, as in the real annotations: leave-one-out removes one answer
        gts[qid] = {
            "question_id": qid,
            "question_type": item["question_type"],
            "answer_type": item["answer_type"],
            "answers": answers,
        }
        res[qid] = {"question_id": qid, "answer": item["prediction"]}
    evaluator = module.VQAEval(_Annotations(gts), _Annotations(res), n=2)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    return {
        "evalQA": {corpus[qid]["id"]: value for qid, value in evaluator.evalQA.items()},
        "overall": evaluator.accuracy["overall"],
        "perAnswerType": evaluator.accuracy["perAnswerType"],
        "perQuestionType": evaluator.accuracy["perQuestionType"],
    }


def _dump(payload: dict[str, Any]) -> str:
    """JSON with one corpus item / result per line: small, and diffs stay readable."""
    lines = ["{"]
    for i, (key, value) in enumerate(payload.items()):
        comma = "," if i < len(payload) - 1 else ""
        if isinstance(value, list | dict) and key in ("corpus", "official"):
            items = value if isinstance(value, list) else list(value.items())
            inner = [
                json.dumps(item, ensure_ascii=False)
                if isinstance(value, list)
                else f"{json.dumps(item[0])}: {json.dumps(item[1], ensure_ascii=False)}"
                for item in items
            ]
            brackets = "[]" if isinstance(value, list) else "{}"
            body = ",\n  ".join(inner)
            lines.append(f'"{key}": {brackets[0]}\n  {body}\n{brackets[1]}{comma}')
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}{comma}")
    return "\n".join(lines) + "\n}\n"


def main(argv: list[str]) -> None:
    """Regenerate ``expected.json`` from a local copy of the official script."""
    if len(argv) != 2:
        raise SystemExit("usage: harness.py /path/to/GT-Vision-Lab/VQA/.../vqaEval.py")
    corpus = build_corpus()
    official = run_official(load_official(argv[1]), corpus)
    payload = {
        "source": "https://github.com/GT-Vision-Lab/VQA/blob/"
        "a013f0043c1e2cdc995922dfe257f7149aa9af06/PythonEvaluationTools/vqaEvaluation/vqaEval.py",
        "seed": SEED,
        "corpus": corpus,
        "official": official,
    }
    EXPECTED_PATH.write_text(_dump(payload))
    print(f"wrote {EXPECTED_PATH} ({len(corpus)} questions, overall {official['overall']})")


if __name__ == "__main__":
    main(sys.argv)
