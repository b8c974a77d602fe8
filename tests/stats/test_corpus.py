"""Sufficient-statistic corpus metrics against the project's BLEU and scikit-learn, on the full
sample and on resampled samples (recomputed from scratch on the resampled items)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from tasks.metrics.captioning.bleu import bleu_scores, bleu_sufficient_statistics
from tasks.metrics.captioning.inputs import CaptionInputs
from tasks.stats import (
    BootstrapSettings,
    accuracy_statistic,
    binary_f1_statistic,
    bleu_statistic,
    bootstrap_corpus,
    confusion_contributions,
    macro_f1_statistic,
)
from tasks.stats.bootstrap import Method
from tasks.stats.resampling import chunk_rows, counts, weighted_sums

SUBJECTS = ["a man", "a woman", "two dogs", "a black cat", "a group of people", "a red bus",
            "the chef", "a young boy"]
VERBS = ["is sitting on", "standing next to", "riding", "walking down", "looking at",
         "parked near"]
OBJECTS = ["a bench", "the street", "a wooden table", "a horse", "the beach", "a white plate"]
TAILS = ["", "", " in a park", " on a sunny day", ", with trees behind", " at night."]


METHODS: list[tuple[Method, str]] = [("percentile", "percentile"), ("bca", "BCa")]


def caption(rng: random.Random, short: bool = False) -> str:
    """A COCO-like caption from templates (shared phrases give real 4-gram matches)."""
    if short:
        return rng.choice(SUBJECTS).split()[-1]
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
    return text.capitalize() if rng.random() < 0.5 else text


def make_inputs(images: int, seed: int) -> CaptionInputs:
    """Predictions share words with 1-5 references; a few are one or two words long."""
    rng = random.Random(seed)
    references = [[caption(rng) for _ in range(rng.randint(1, 5))] for _ in range(images)]
    predictions = [caption(rng, short=rng.random() < 0.1) for _ in range(images)]
    return CaptionInputs([f"img{i}" for i in range(images)], predictions, references)


def subset(inputs: CaptionInputs, rows: np.ndarray) -> CaptionInputs:
    """The resampled corpus (repeated images get new ids)."""
    return CaptionInputs([f"r{j}" for j in range(len(rows))],
                         [inputs.predictions[i] for i in rows],
                         [inputs.references[i] for i in rows])


@pytest.fixture(scope="module")
def captions() -> CaptionInputs:
    return make_inputs(120, seed=7)


def test_bleu_statistics_reproduce_the_corpus_bleu_exactly(captions: CaptionInputs) -> None:
    per_item = bleu_sufficient_statistics(captions)
    assert per_item.shape == (120, 10) and per_item.dtype == np.int64
    corpus, _ = bleu_scores(captions)
    sums = per_item.sum(axis=0, keepdims=True).astype(float)
    for order in range(1, 5):
        assert bleu_statistic(order)(sums)[0] == corpus[order - 1]  # bit for bit
    two = bleu_sufficient_statistics(captions, n=2)
    assert bleu_statistic(2)(two.sum(axis=0, keepdims=True).astype(float))[0] == corpus[1]
    with pytest.raises(ValueError):
        bleu_statistic(3)(two.sum(axis=0, keepdims=True).astype(float))


def test_bleu_statistics_reuse_the_shared_tokenisation(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = make_inputs(30, seed=2)
    corpus, _ = bleu_scores(inputs)  # tokenises and builds the n-gram tables once

    def no_second_tokenisation(captions: list[str]) -> list[str]:
        raise AssertionError("captions were tokenised again")

    monkeypatch.setattr("tasks.metrics.captioning.inputs.tokenize", no_second_tokenisation)
    per_item = bleu_sufficient_statistics(inputs)
    assert bleu_statistic(4)(per_item.sum(axis=0, keepdims=True).astype(float))[0] == corpus[3]


def test_resampled_bleu_equals_bleu_of_the_resampled_corpus(captions: CaptionInputs) -> None:
    per_item = bleu_sufficient_statistics(captions).astype(float)
    rng = np.random.default_rng(0)
    indices = rng.integers(0, len(captions), (4, len(captions)))
    resampled = bleu_statistic(4)(weighted_sums(counts(indices, len(captions)), per_item))
    for row, value in zip(indices, resampled, strict=True):
        expected = bleu_scores(subset(captions, row))[0][3]
        assert value == pytest.approx(expected, rel=1e-13)


def test_bleu_interval_equals_scipy_recomputing_from_statistics(captions: CaptionInputs) -> None:
    per_item = bleu_sufficient_statistics(captions).astype(float)
    bleu4 = bleu_statistic(4)

    def recompute(i: np.ndarray, axis: int) -> np.ndarray:
        """BLEU-4 of resampled item indices ``i`` (scipy's vectorised call)."""
        return bleu4(np.atleast_2d(per_item[i].sum(axis=-2))).reshape(i.shape[:-1])

    for method, scipy_method in METHODS:
        ours = bootstrap_corpus(per_item, bleu4, BootstrapSettings(500, 0.95, method, seed=3))
        reference = stats.bootstrap(
            (np.arange(120),), recompute,
            n_resamples=500, batch=chunk_rows(120), method=scipy_method,
            rng=np.random.default_rng(3)).confidence_interval
        assert (ours.low, ours.high) == pytest.approx(tuple(reference), rel=1e-12)
        assert 0.05 < ours.low < ours.estimate < ours.high < 0.9


def classification(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with one class never predicted and one never true (zero-division cases)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes - 1, n)
    predicted = np.where(rng.random(n) < 0.6, truth, rng.integers(1, classes, n))
    return truth, predicted


@pytest.mark.parametrize("as_dense", [False, True])
def test_f1_and_accuracy_equal_sklearn_on_full_and_resampled_data(as_dense: bool) -> None:
    truth, predicted = classification(300, 6, seed=1)
    per_item = confusion_contributions(truth, predicted, 6)
    matrix = per_item.toarray() if as_dense else per_item
    labels = list(range(6))
    indices = np.vstack([np.arange(300), np.random.default_rng(2).integers(0, 300, (3, 300))])
    sums = weighted_sums(counts(indices, 300), matrix)
    for row, summed in zip(indices, sums, strict=True):
        t, p = truth[row], predicted[row]
        assert macro_f1_statistic(summed[None])[0] == pytest.approx(
            f1_score(t, p, labels=labels, average="macro", zero_division=0), abs=1e-14)
        assert accuracy_statistic(summed[None])[0] == pytest.approx(accuracy_score(t, p))
        assert binary_f1_statistic(2)(summed[None])[0] == pytest.approx(
            f1_score(t == 2, p == 2, zero_division=0), abs=1e-14)


def test_binary_f1_interval_and_sparse_dense_agree() -> None:
    truth, predicted = classification(400, 2 + 1, seed=4)
    truth, predicted = truth % 2, predicted % 2
    per_item = confusion_contributions(truth, predicted, 2)
    settings = BootstrapSettings(400, method="bca", seed=9)
    sparse_ci = bootstrap_corpus(per_item, binary_f1_statistic(1), settings)
    dense_ci = bootstrap_corpus(per_item.toarray(), binary_f1_statistic(1), settings)
    assert sparse_ci.estimate == pytest.approx(f1_score(truth, predicted))
    assert (sparse_ci.low, sparse_ci.high) == pytest.approx((dense_ci.low, dense_ci.high))
    assert sparse_ci.method == "bca" and sparse_ci.low < sparse_ci.estimate < sparse_ci.high


def test_confusion_contributions_validate_labels() -> None:
    with pytest.raises(ValueError):
        confusion_contributions([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        confusion_contributions([0, 1], [0], 3)
