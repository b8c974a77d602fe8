"""VQA accuracy: parity with the official GT-Vision-Lab/VQA script, hand-checked cases, inputs."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tasks.metrics.base import get_metric
from tasks.metrics.vqa import (
    VQAInputs,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    question_accuracy,
    safe_key_part,
    vqa_accuracy,
)

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference" / "vqa_official"
TEN = 10


def _load_harness() -> ModuleType:
    """Import the harness by path: ``tests`` is not a package."""
    spec = importlib.util.spec_from_file_location(
        "vqa_official_harness", REFERENCE_DIR / "harness.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    return _load_harness()


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return json.loads((REFERENCE_DIR / "expected.json").read_text(encoding="utf-8"))


def _inputs(corpus: list[dict[str, Any]]) -> VQAInputs:
    return VQAInputs(
        ids=[q["id"] for q in corpus],
        predictions=[q["prediction"] for q in corpus],
        answers=[list(q["answers"]) for q in corpus],
        question_types=[q["question_type"] for q in corpus],
        answer_types=[q["answer_type"] for q in corpus],
    )


def _assert_matches_official(corpus: list[dict[str, Any]], official: dict[str, Any]) -> None:
    """Our fractions x100, rounded to 2 decimals as the script does, equal its numbers exactly."""
    result = vqa_accuracy(_inputs(corpus))
    ours = result.per_sample["vqa_accuracy"]
    mismatches = {
        q["id"]: (q, round(100 * float(v), 2), official["evalQA"][q["id"]])
        for q, v in zip(corpus, ours, strict=True)
        if round(100 * float(v), 2) != official["evalQA"][q["id"]]
    }
    assert not mismatches
    assert round(100 * result.corpus["vqa_accuracy"], 2) == official["overall"]
    for label, table in (("answer_type", "perAnswerType"), ("question_type", "perQuestionType")):
        for kind, value in official[table].items():
            key = f"vqa_accuracy.{label}.{safe_key_part(kind)}"
            assert round(100 * result.corpus[key], 2) == value, key
        assert len(result.extra[f"{label}s"]) == len(official[table])


# --- parity with the official script ---


def test_parity_with_stored_official_outputs(expected: dict[str, Any]) -> None:
    assert len(expected["corpus"]) >= 500
    _assert_matches_official(expected["corpus"], expected["official"])


def test_stored_corpus_is_the_seeded_corpus(harness: ModuleType, expected: dict[str, Any]) -> None:
    """The fixture can be regenerated: the harness still builds the very same corpus."""
    assert harness.build_corpus(expected["seed"]) == expected["corpus"]


def test_corpus_covers_the_tricky_cases(expected: dict[str, Any]) -> None:
    corpus = expected["corpus"]
    texts = [q["prediction"] for q in corpus] + [a for q in corpus for a in q["answers"]]
    for needle in (",", ".", "two", "the ", "dont", "Yes", "\n", "\t", "/", "-", "1,000", "$"):
        assert any(needle in t for t in texts), needle
    assert any(len(set(q["answers"])) == 1 for q in corpus)  # unanimous: no normalisation
    assert {len(q["answers"]) for q in corpus} >= {1, 2, 3, 5, 9, 10}
    assert {q["answer_type"] for q in corpus} == {"yes/no", "number", "other"}
    assert len(set(expected["official"]["evalQA"].values())) >= 10  # many distinct scores


@pytest.mark.skipif(
    not os.environ.get("BIFOCAL_VQA_OFFICIAL"),
    reason="set BIFOCAL_VQA_OFFICIAL=/path/to/GT-Vision-Lab/VQA/.../vqaEval.py to run it live",
)
def test_parity_live_with_official_script(harness: ModuleType, expected: dict[str, Any]) -> None:
    official = harness.run_official(
        harness.load_official(os.environ["BIFOCAL_VQA_OFFICIAL"]), copy.deepcopy(expected["corpus"])
    )
    assert official == expected["official"]
    _assert_matches_official(expected["corpus"], official)


# --- hand-checked accuracy arithmetic ---


@pytest.mark.parametrize(
    ("matching", "expected_accuracy"),
    [
        # m of 10 humans gave the prediction. Leaving out one of those m leaves m-1 matches,
        # leaving out one of the other 10-m leaves m; each subset scores min(matches/3, 1).
        (0, 0.0),  # every subset: 0/3
        (1, 0.3),  # (1 * 0/3 + 9 * 1/3) / 10 = 3/10
        (2, 0.6),  # (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6/10
        (3, 0.9),  # (3 * 2/3 + 7 * 1) / 10 = (2 + 7) / 10; not 1.0: some subsets keep only 2
        (4, 1.0),  # (4 * 1 + 6 * 1) / 10: every subset keeps >= 3 matches
        (10, 1.0),
    ],
)
def test_leave_one_out_arithmetic(matching: int, expected_accuracy: float) -> None:
    answers = ["cat"] * matching + [f"dog{i}" for i in range(TEN - matching)]
    assert question_accuracy("cat", answers) == pytest.approx(expected_accuracy, abs=1e-12)


def test_fewer_than_ten_answers() -> None:
    # 2 answers, both match: leaving either out leaves 1 match -> 1/3 each.
    assert question_accuracy("cat", ["cat", "cat"]) == pytest.approx(1 / 3)
    # 5 answers, 4 match: 4 subsets keep 3 (-> 1), one keeps 4 (-> 1).
    assert question_accuracy("cat", ["cat"] * 4 + ["dog"]) == 1.0
    # A single answer leaves nothing to compare with: always 0, as in the official script.
    assert question_accuracy("cat", ["cat"]) == 0.0


# --- normalisation, as the official script does it ---


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Two", "2"),
        ("none", "0"),
        ("the dog", "dog"),
        ("A Dog.", "dog"),
        ("dont", "don't"),
        ("Im", "im"),  # capitalised contraction keys never match after lower-casing
        ("yes!", "yes"),
        ("black/white", "black white"),  # no space around "/": replaced by a space
        ("black / white", "black white"),  # space next to "/": deleted, split() merges spaces
        ("black, white", "black white"),
        ("1,000", "1000"),  # digit-comma-digit: every punctuation mark is deleted
        ("3.5", "3.5"),  # a period before a digit is kept
        ("st. louis", "st louis"),
        ("u.s.a.", "usa"),
        ("t-shirt", "t shirt"),
        (" left\n", "left"),
        ("\tfrisbee\t", "frisbee"),
        ("it's", "it's"),  # apostrophes are not punctuation for the script
        ("x" + "." * 40, "x" + "." * 8),  # only 32 periods are stripped (re.UNICODE as count)
    ],
)
def test_normalization(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


def test_punctuation_then_digits_are_separate_steps() -> None:
    assert process_punctuation("(two)") == " two "
    assert process_digit_article(" two ") == "2"


def test_unanimous_answers_are_not_normalized() -> None:
    """Official behaviour: with identical human answers, only exact (stripped) matches count."""
    assert question_accuracy("Yes", ["yes"] * TEN) == 0.0
    assert question_accuracy("yes.", ["yes"] * TEN) == 0.0
    assert question_accuracy(" yes\n", ["yes"] * TEN) == 1.0
    # As soon as the humans disagree (even only in form), both sides are normalised.
    assert question_accuracy("Yes.", ["yes"] * 9 + ["Yes"]) == 1.0
    assert question_accuracy("two", ["2"] * 5 + ["two"] * 5) == 1.0


# --- metric result and registry ---


def test_metric_result_keys_and_types() -> None:
    inputs = VQAInputs(
        ids=["a", "b", "c"],
        predictions=["yes", "2", "red"],
        answers=[["yes"] * TEN, ["two"] * 3 + ["3"] * 7, ["blue"] * TEN],
        question_types=["is the", "how many", None],
        answer_types=["yes/no", "number", "other"],
    )
    result = vqa_accuracy(inputs)
    assert result.skipped is None
    np.testing.assert_allclose(result.per_sample["vqa_accuracy"], [1.0, 0.9, 0.0])
    assert result.corpus["vqa_accuracy"] == pytest.approx(1.9 / 3)
    assert result.corpus["vqa_accuracy.answer_type.yes_no"] == 1.0
    assert result.corpus["vqa_accuracy.answer_type.number"] == pytest.approx(0.9)
    assert result.corpus["vqa_accuracy.question_type.is_the"] == 1.0
    assert result.corpus["vqa_accuracy.question_type.how_many"] == pytest.approx(0.9)
    assert not any(k.endswith("None") for k in result.corpus)  # None types are left out
    assert result.extra["answer_types"]["vqa_accuracy.answer_type.yes_no"] == {
        "type": "yes/no",
        "count": 1,
    }
    assert "question_types" in result.extra and "warnings" not in result.extra


def test_no_types_gives_only_overall() -> None:
    result = vqa_accuracy(VQAInputs(ids=["a"], predictions=["x"], answers=[["x", "x"]]))
    assert set(result.corpus) == {"vqa_accuracy"}


def test_single_answer_questions_are_flagged() -> None:
    result = vqa_accuracy(
        VQAInputs(ids=["a", "b"], predictions=["x", "x"], answers=[["x"], ["x"] * 3])
    )
    assert result.per_sample["vqa_accuracy"][0] == 0.0
    assert result.extra["warnings"] == ["1 question(s) have a single answer: accuracy is always 0"]


def test_empty_inputs_are_skipped() -> None:
    assert vqa_accuracy(VQAInputs(ids=[], predictions=[], answers=[])).skipped


def test_inputs_are_not_mutated() -> None:
    answers = [["The Dog", "dog", "dogs"]]
    vqa_accuracy(VQAInputs(ids=["a"], predictions=["dog"], answers=answers))
    assert answers == [["The Dog", "dog", "dogs"]]


def test_type_key_collision_is_an_error() -> None:
    with pytest.raises(ValueError, match="both map to key"):
        vqa_accuracy(
            VQAInputs(
                ids=["a", "b"],
                predictions=["x", "x"],
                answers=[["x"] * 3, ["x"] * 3],
                answer_types=["yes/no", "yes no"],
            )
        )


def test_safe_key_part() -> None:
    assert safe_key_part("yes/no") == "yes_no"
    assert safe_key_part("what color is the") == "what_color_is_the"
    assert safe_key_part("a.b-c_d") == "a.b-c_d"
    assert safe_key_part("") == "_"


def test_registered() -> None:
    spec = get_metric("vqa_accuracy")
    assert spec.task == "vqa"
    assert dict(spec.outputs) == {"vqa_accuracy": True}
    result = spec(VQAInputs(ids=["a"], predictions=["x"], answers=[["x"] * TEN]))
    assert result.corpus["vqa_accuracy"] == 1.0


# --- validation ---


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"predictions": ["x"]}, "predictions has 1 entries, ids has 2"),
        ({"answers": [["x"]]}, "answers has 1 entries"),
        ({"answer_types": ["other"]}, "answer_types has 1 entries"),
        ({"question_types": ["what"] * 3}, "question_types has 3 entries"),
        ({"ids": ["a", "a"]}, "duplicate id 'a'"),
        ({"answers": [["x"], []]}, "question 'b' needs a non-empty list"),
        ({"answers": [["x"], "x"]}, "question 'b' needs a non-empty list"),
    ],
)
def test_validation(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"ids": ["a", "b"], "predictions": ["x", "y"], "answers": [["x"], ["y"]]}
    with pytest.raises(ValueError, match=message):
        VQAInputs(**{**base, **kwargs})
