"""Manifests derived from the demo benchmark's metadata: visual questions with human answers.

Each benchmark image knows its shape, colour, background, size and position, so questions
about them have exact answers. The VQA manifest mimics VQA v2: ten "human" answers per
question, mostly the exact answer plus a few seeded variants ("Red", "red.", "it is red"), so
the official accuracy (which normalises answers when humans disagree) behaves as on real data.

Everything is driven by string-seeded ``random.Random`` instances: the same benchmark and seed
give byte-identical files on every platform.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tasks.demo.benchmark import BACKGROUNDS, COLORS, POSITIONS, SHAPES, load_manifest

N_HUMAN_ANSWERS = 10
MAX_VARIANTS = 3  # at most this many of the ten answers differ from the exact one


@dataclass(frozen=True)
class Question:
    """One question about an image, its exact answer and its VQA v2 style types."""

    kind: str  # color | shape | size | position | background
    question: str
    answer: str
    question_type: str
    answer_type: str


# kind -> (question, metadata field, question type); yes/no size questions are built apart.
_OPEN_QUESTIONS: dict[str, tuple[str, str, str]] = {
    "color": ("what color is the shape?", "color", "what color is the"),
    "shape": ("what shape is it?", "shape", "what shape"),
    "position": ("where is the shape?", "position", "where is the"),
    "background": ("what color is the background?", "background", "what color is the"),
}
QUESTION_KINDS: tuple[str, ...] = ("color", "shape", "size", "position", "background")
SIZE_QUESTIONS: dict[str, str] = {"large": "is the shape large?", "small": "is the shape small?"}

_POSITION_PHRASES: dict[str, str] = {
    "center": "in the center", "left": "on the left", "right": "on the right",
    "top": "at the top", "bottom": "at the bottom",
}


def size_question(record: dict, asked: str) -> Question:
    """``is the shape <asked>?`` answered yes/no from the record's size."""
    answer = "yes" if record["size"] == asked else "no"
    return Question("size", SIZE_QUESTIONS[asked], answer, "is the", "yes/no")


def open_question(record: dict, kind: str) -> Question:
    question, field, question_type = _OPEN_QUESTIONS[kind]
    return Question(kind, question, record[field], question_type, "other")


def all_questions(record: dict) -> list[Question]:
    """Every question the demo asks about an image (both size questions); used for training."""
    questions = [open_question(record, k) for k in ("color", "shape", "position", "background")]
    return questions + [size_question(record, asked) for asked in SIZE_QUESTIONS]


def question_words() -> list[str]:
    """Every word/punctuation piece of the questions and their exact answers (sorted)."""
    texts = [q for q, _, _ in _OPEN_QUESTIONS.values()] + list(SIZE_QUESTIONS.values())
    texts += ["yes", "no", *SHAPES, *COLORS, *BACKGROUNDS, *POSITIONS]
    words = {w for text in texts for w in text.replace("?", " ? ").split()}
    return sorted(words)


def _variants(question: Question) -> list[str]:
    """Plausible ways a person writes the same answer (some normalise to it, some do not)."""
    a = question.answer
    common = [a.capitalize(), f"{a}.", a.upper()]
    if question.answer_type == "yes/no":
        return [*common, "yep" if a == "yes" else "nope"]
    if question.kind == "position":
        return [*common, _POSITION_PHRASES[a]]
    if question.kind == "shape":
        return [*common, f"a {a}", f"{a} shape"]
    return [*common, f"it is {a}", f"{a} color"]


def human_answers(question: Question, rng: random.Random) -> list[str]:
    """Ten answers: the exact one at least ``10 - MAX_VARIANTS`` times, seeded variants."""
    answers = [question.answer] * N_HUMAN_ANSWERS
    n_variants = rng.choice((0, 0, 1, 1, 2, MAX_VARIANTS))
    options = _variants(question)
    for slot in rng.sample(range(N_HUMAN_ANSWERS), n_variants):
        answers[slot] = options[rng.randrange(len(options))]
    return answers


def sample_questions(record: dict, rng: random.Random) -> list[Question]:
    """Two or three questions of distinct kinds about one image."""
    kinds = rng.sample(QUESTION_KINDS, rng.choice((2, 3)))
    kinds.sort(key=QUESTION_KINDS.index)
    return [size_question(record, rng.choice(tuple(SIZE_QUESTIONS))) if kind == "size"
            else open_question(record, kind) for kind in kinds]


def vqa_records(records: list[dict], split: str, seed: int) -> list[dict]:
    """VQA manifest lines for ``records`` (one split of the benchmark), deterministically."""
    rng = random.Random(f"bifocal-demo-vqa/{seed}/{split}")
    lines = []
    for record in records:
        for k, q in enumerate(sample_questions(record, rng)):
            lines.append({
                "id": f"{record['id']}-q{k}",
                "image": record["image"],
                "question": q.question,
                "answers": human_answers(q, rng),
                "question_type": q.question_type,
                "answer_type": q.answer_type,
            })
    return lines


def write_vqa_manifest(dataset_root: Path, split: str, out_path: Path, seed: int = 0) -> Path:
    """Write the VQA manifest of ``split`` (JSONL) to ``out_path`` and return it.

    Image paths stay relative to ``dataset_root`` (as in the split's manifest), so put the
    file in ``dataset_root`` or point the dataset's root there.
    """
    records = load_manifest(Path(dataset_root) / f"{split}.jsonl")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8", newline="\n") as fh:
        for line in vqa_records(records, split, seed):
            fh.write(json.dumps(line) + "\n")
    return out_path
