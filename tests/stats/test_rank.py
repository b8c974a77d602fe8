"""AUROC and median on resampled items against scikit-learn / numpy / scipy.stats.bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from tasks.stats import (
    BootstrapSettings,
    auroc,
    auroc_leave_one_out,
    auroc_of_resamples,
    bootstrap_auroc,
    paired_bootstrap_indices,
)
from tasks.stats.bootstrap import Method
from tasks.stats.resampling import chunk_rows


def scored(n: int, seed: int, decimals: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative scores rounded to create many ties."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(int)
    return np.round(rng.normal(labels * 0.8, 1.0), decimals), labels


def test_auroc_equals_sklearn_with_ties() -> None:
    for seed, decimals in ((0, 1), (1, 0), (2, 6)):
        scores, labels = scored(250, seed, decimals)
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-14)
    assert auroc([0.1, 0.1, 0.1], [0, 1, 1]) == 0.5
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def test_resampled_and_leave_one_out_auroc_equal_sklearn() -> None:
    scores, labels = scored(120, seed=3)
    indices = np.random.default_rng(4).integers(0, 120, (5, 120))
    values = auroc_of_resamples(scores, labels)(indices)
    expected = [roc_auc_score(labels[row], scores[row]) for row in indices]
    assert values == pytest.approx(expected, abs=1e-14)
    leave_one_out = [roc_auc_score(np.delete(labels, i), np.delete(scores, i)) for i in range(120)]
    assert auroc_leave_one_out(scores, labels) == pytest.approx(leave_one_out, abs=1e-14)


@pytest.mark.parametrize(("method", "scipy_method"), [("percentile", "percentile"),
                                                      ("bca", "BCa")])
def test_auroc_interval_equals_scipy_bootstrap_of_sklearn(method: Method,
                                                          scipy_method: str) -> None:
    scores, labels = scored(150, seed=5)
    ours = bootstrap_auroc(scores, labels, BootstrapSettings(300, 0.9, method, seed=8))
    reference = stats.bootstrap(
        (scores, labels), lambda s, y: roc_auc_score(y, s), paired=True, vectorized=False,
        n_resamples=300, confidence_level=0.9, batch=chunk_rows(150), method=scipy_method,
        rng=np.random.default_rng(8)).confidence_interval
    assert ours.method == method
    assert (ours.low, ours.high) == pytest.approx(tuple(reference), abs=1e-12)


def test_resamples_lacking_a_class_are_counted_and_left_out() -> None:
    scores, labels = scored(25, seed=6)
    labels = np.zeros(25, dtype=int)
    labels[[3, 17]] = 1
    interval = bootstrap_auroc(scores, labels, BootstrapSettings(400, seed=1))
    # P(no positive in a resample) = (23/25)^25 ~ 12 %
    assert 20 < interval.undefined < 80
    assert 0 <= interval.low <= interval.high <= 1
    assert bootstrap_auroc(scores, np.ones(25, dtype=int)).method == "none"


def test_paired_auroc_delta_of_identical_scores_is_zero() -> None:
    scores, labels = scored(200, seed=9)
    better = scores + 0.8 * labels  # planted improvement
    delta = paired_bootstrap_indices(
        200, auroc_of_resamples(scores, labels), auroc_of_resamples(better, labels),
        BootstrapSettings(500, method="bca", seed=2),
        lambda: auroc_leave_one_out(scores, labels), lambda: auroc_leave_one_out(better, labels))
    assert delta.estimate == pytest.approx(auroc(better, labels) - auroc(scores, labels))
    assert delta.method == "bca" and delta.low > 0
    same = paired_bootstrap_indices(200, auroc_of_resamples(scores, labels),
                                    auroc_of_resamples(scores, labels))
    assert same.low == same.high == 0.0
