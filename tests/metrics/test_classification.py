"""Classification metrics against scikit-learn (a test-only dependency), plus validation."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    top_k_accuracy_score,
)

import tasks.metrics.classification as classification_module
from tasks.metrics.base import get_metric
from tasks.metrics.classification import (
    ClassificationInputs,
    classification,
    safe_key_part,
    top_k_hits,
)

TOL = {"rel": 1e-12, "abs": 1e-12}


def _random_case(
    seed: int,
    n: int,
    n_classes: int,
    *,
    unused: int = 0,
    never_predicted: int = 0,
    ties: bool = False,
) -> dict[str, Any]:
    """Random labels/predictions/scores over ``n_classes`` named classes.

    The last ``unused`` classes never occur in the labels (still predicted sometimes) and the
    ``never_predicted`` classes before them are never predicted (but labelled).
    """
    rng = np.random.default_rng(seed)
    # Names in reverse alphabetical order: class_names order, not sorted order, must rule.
    names = [f"class {n_classes - i:02d}/{'ab'[i % 2]}" for i in range(n_classes)]
    label_pool = np.arange(n_classes - unused)
    pred_pool = np.array(
        [
            i
            for i in range(n_classes)
            if not n_classes - unused - never_predicted <= i < n_classes - unused
        ]
    )
    y = rng.choice(label_pool, size=n)
    p = np.where(rng.random(n) < 0.5, y, rng.choice(pred_pool, size=n))
    p = np.where(np.isin(p, pred_pool), p, rng.choice(pred_pool, size=n))
    scores = rng.normal(size=(n, n_classes))
    scores[np.arange(n), y] += rng.random(n) * 2  # better than chance
    if ties:
        scores = np.round(scores)  # many equal scores
    return {
        "ids": [f"s{i}" for i in range(n)],
        "labels": [names[i] for i in y],
        "predictions": [names[i] for i in p],
        "scores": scores,
        "class_names": names,
        "y": y,
    }


CASES = [
    pytest.param({"seed": 0, "n": 300, "n_classes": 12}, id="plain"),
    pytest.param(
        {"seed": 1, "n": 200, "n_classes": 10, "unused": 2}, id="classes-absent-from-labels"
    ),
    pytest.param({"seed": 2, "n": 250, "n_classes": 9, "never_predicted": 3}, id="never-predicted"),
    pytest.param(
        {"seed": 3, "n": 400, "n_classes": 15, "unused": 3, "never_predicted": 2, "ties": True},
        id="absent-never-predicted-ties",
    ),
    pytest.param(
        {"seed": 4, "n": 50, "n_classes": 30, "unused": 10}, id="many-classes-few-samples"
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_matches_sklearn(case: dict[str, Any]) -> None:
    data = _random_case(**case)
    names, y_true, y_pred = data["class_names"], data["labels"], data["predictions"]
    inputs = ClassificationInputs(
        ids=data["ids"], labels=y_true, predictions=y_pred, scores=data["scores"], class_names=names
    )
    unused, never_predicted = case.get("unused", 0), case.get("never_predicted", 0)
    absent = names[len(names) - unused :]
    assert not set(absent) & set(y_true)
    assert set(absent) <= set(y_pred) or len(y_pred) < 100  # absent yet predicted
    not_predicted = names[len(names) - unused - never_predicted : len(names) - unused]
    assert not set(not_predicted) & set(y_pred) and set(not_predicted) <= set(y_true)
    result = classification(inputs)
    corpus = result.corpus
    kw = {"labels": names, "zero_division": 0}

    assert corpus["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), **TOL)
    for avg in ("macro", "weighted"):
        assert corpus[f"{avg}_f1"] == pytest.approx(
            f1_score(y_true, y_pred, average=avg, **kw), **TOL
        )
        assert corpus[f"{avg}_precision"] == pytest.approx(
            precision_score(y_true, y_pred, average=avg, **kw), **TOL
        )
    assert corpus["macro_recall"] == pytest.approx(
        recall_score(y_true, y_pred, average="macro", **kw), **TOL
    )
    per_class = {
        "precision": precision_score(y_true, y_pred, average=None, **kw),
        "recall": recall_score(y_true, y_pred, average=None, **kw),
        "f1": f1_score(y_true, y_pred, average=None, **kw),
    }
    for i, name in enumerate(names):
        assert corpus[f"recall.{safe_key_part(name)}"] == pytest.approx(
            per_class["recall"][i], **TOL
        )
        for metric, values in per_class.items():
            assert result.extra["per_class"][name][metric] == pytest.approx(values[i], **TOL)

    cm = result.extra["confusion_matrix"]
    assert cm["labels"] == names
    assert cm["matrix"] == confusion_matrix(y_true, y_pred, labels=names).tolist()

    # sklearn wants sorted labels; integer codes in class_names order are exactly that.
    expected_top5 = top_k_accuracy_score(
        data["y"], data["scores"], k=5, labels=np.arange(len(names))
    )
    assert corpus["top5_accuracy"] == pytest.approx(expected_top5, **TOL)
    np.testing.assert_array_equal(
        result.per_sample["correct"], np.array(y_true) == np.array(y_pred)
    )
    assert result.per_sample["top5_correct"].mean() == pytest.approx(expected_top5, **TOL)


def test_absent_classes_are_noted_and_zero() -> None:
    data = _random_case(seed=5, n=100, n_classes=8, unused=2)
    result = classification(
        ClassificationInputs(
            ids=data["ids"],
            labels=data["labels"],
            predictions=data["predictions"],
            class_names=data["class_names"],
        )
    )
    absent = data["class_names"][-2:]
    assert any(str(absent) in note for note in result.extra["notes"])
    for name in absent:
        assert result.corpus[f"recall.{safe_key_part(name)}"] == 0.0
        assert result.extra["per_class"][name]["support"] == 0


def test_without_class_names_uses_sorted_union() -> None:
    labels = ["dog", "cat", "cat", "bird", "dog"]
    predictions = ["dog", "cat", "dog", "fish", "dog"]
    result = classification(
        ClassificationInputs(ids=list("abcde"), labels=labels, predictions=predictions)
    )
    assert result.extra["confusion_matrix"]["labels"] == ["bird", "cat", "dog", "fish"]
    assert (
        result.extra["confusion_matrix"]["matrix"] == confusion_matrix(labels, predictions).tolist()
    )
    assert result.corpus["macro_f1"] == pytest.approx(
        f1_score(labels, predictions, average="macro", zero_division=0)
    )
    assert result.corpus["accuracy"] == pytest.approx(0.6)
    assert "top5_accuracy" not in result.corpus and "top5_correct" not in result.per_sample


def test_hand_checked_small_case() -> None:
    # true:  a a b b c ; pred: a b b b a
    # a: tp 1, support 2, predicted 2 -> P 1/2, R 1/2, F1 2/4
    # b: tp 2, support 2, predicted 3 -> P 2/3, R 1,   F1 4/5
    # c: tp 0, support 1, predicted 0 -> P 0 (zero division), R 0, F1 0
    result = classification(
        ClassificationInputs(ids=list("12345"), labels=list("aabbc"), predictions=list("abbba"))
    )
    assert result.corpus["accuracy"] == pytest.approx(3 / 5)
    assert result.corpus["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert result.corpus["macro_recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert result.corpus["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 0) / 3)
    assert result.corpus["weighted_f1"] == pytest.approx((2 * 1 / 2 + 2 * 4 / 5 + 1 * 0) / 5)
    assert result.corpus["recall.c"] == 0.0
    assert result.extra["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_top5_skipped_with_five_or_fewer_classes() -> None:
    names = list("abcde")
    result = classification(
        ClassificationInputs(
            ids=["1", "2"],
            labels=["a", "b"],
            predictions=["a", "a"],
            scores=np.ones((2, 5)),
            class_names=names,
        )
    )
    assert "top5_accuracy" not in result.corpus
    assert any("top5_accuracy skipped" in note for note in result.extra["notes"])


def test_top_k_ties_follow_sklearn() -> None:
    scores = np.zeros((7, 7))  # all tied: sklearn ranks higher class indices first
    y = np.arange(7)
    hits = top_k_hits(scores, y, 5)
    np.testing.assert_array_equal(hits, [False, False, True, True, True, True, True])
    assert hits.mean() == pytest.approx(top_k_accuracy_score(y, scores, k=5, labels=np.arange(7)))


def test_keys_are_mlflow_safe() -> None:
    names = ["golden retriever", "yes/no", "jack-o'-lantern", "tench, Tinca tinca", "é"]
    result = classification(
        ClassificationInputs(
            ids=["1"], labels=[names[0]], predictions=[names[1]], class_names=names
        )
    )
    for key in result.corpus:
        assert all(ch.isalnum() or ch in "_.-" for ch in key), key
    assert "recall.golden_retriever" in result.corpus and "recall.yes_no" in result.corpus


def test_registered() -> None:
    spec = get_metric("classification")
    assert spec.task == "classification"
    assert set(spec.outputs) == {
        "accuracy",
        "top5_accuracy",
        "macro_f1",
        "weighted_f1",
        "macro_precision",
        "weighted_precision",
        "macro_recall",
    }
    assert all(spec.outputs.values())


def test_empty_inputs_are_skipped() -> None:
    assert classification(ClassificationInputs(ids=[], labels=[], predictions=[])).skipped


def test_library_does_not_import_sklearn() -> None:
    tree = ast.parse(Path(classification_module.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "sklearn" not in imported


# --- validation ---

BASE: dict[str, Any] = {
    "ids": ["a", "b"],
    "labels": ["x", "y"],
    "predictions": ["x", "x"],
    "class_names": ["x", "y", "z"],
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": ["x"]}, "labels has 1 entries, ids has 2"),
        ({"predictions": ["x", "y", "z"]}, "predictions has 3 entries"),
        ({"ids": ["a", "a"]}, "duplicate id 'a'"),
        ({"labels": ["x", "w"]}, "sample 'b': label 'w' is not in class_names"),
        ({"predictions": ["v", "x"]}, "sample 'a': prediction 'v' is not in class_names"),
        ({"class_names": ["x", "y", "x"]}, "class_names has duplicates"),
        ({"scores": np.zeros((2, 2))}, r"scores has shape \(2, 2\), expected .* = \(2, 3\)"),
        ({"scores": np.zeros(6)}, r"scores has shape \(6,\)"),
        ({"scores": np.array([[0, 0, 0], [0, np.nan, 0]])}, "sample 'b' has non-finite scores"),
        ({"scores": np.zeros((2, 3)), "class_names": None}, "scores need class_names"),
        ({"class_names": ["x", "y", "x y", "x/y"]}, "both map to metric key 'recall.x_y'"),
    ],
)
def test_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassificationInputs(**{**BASE, **changes})


def test_scores_are_converted_to_float_arrays() -> None:
    inputs = ClassificationInputs(**{**BASE, "scores": [[1, 2, 3], [3, 2, 1]]})
    assert isinstance(inputs.scores, np.ndarray) and inputs.scores.dtype == np.float64
