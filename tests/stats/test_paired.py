"""Paired comparisons against scipy (permutation_test, bootstrap, binomtest), a worked Holm
example, and known answers (identical runs, a planted difference, a tiny noisy one)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from tasks.stats import (
    BootstrapSettings,
    bleu_statistic,
    cohens_dz,
    confusion_contributions,
    holm,
    macro_f1_statistic,
    mcnemar,
    paired_bootstrap_corpus,
    paired_bootstrap_mean,
    paired_permutation_corpus,
    paired_permutation_mean,
    slice_vs_rest,
)
from tasks.stats.bootstrap import Method
from tasks.stats.resampling import chunk_rows

METHODS: list[tuple[Method, str]] = [("percentile", "percentile"), ("bca", "BCa")]


def mean_delta(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(y - x, axis=axis)


def scipy_paired_p(a: np.ndarray, b: np.ndarray, resamples: int,
                   seed: int) -> Any:  # scipy's PermutationTestResult
    return stats.permutation_test((a, b), mean_delta, permutation_type="samples",
                                  n_resamples=resamples, rng=np.random.default_rng(seed))


def mc_tolerance(p: float, resamples: int) -> float:
    """6 standard errors of the difference of two independent Monte-Carlo p-values (each
    two-sided p is twice a tail proportion, so its variance is 4 q (1 - q) / R, q = p / 2)."""
    q = p / 2
    return 6 * math.sqrt(2 * 4 * q * (1 - q) / resamples)


def paired_runs(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.5, 0.2, n)
    return a, a + shift + rng.normal(0, 0.2, n)


def test_exact_paired_permutation_equals_scipy() -> None:
    for seed in range(4):
        a, b = paired_runs(10, 0.1, seed)
        ours = paired_permutation_mean(a, b, resamples=9999, seed=0)
        reference = scipy_paired_p(a, b, 9999, seed=0)
        assert ours.exact and ours.resamples == 2**10
        assert ours.pvalue == pytest.approx(reference.pvalue, abs=1e-12)
        assert ours.statistic == pytest.approx(reference.statistic, rel=1e-12)


def test_random_paired_permutation_matches_scipy() -> None:
    a, b = paired_runs(80, 0.05, seed=11)
    ours = paired_permutation_mean(a, b, resamples=20_000, seed=1)
    reference = scipy_paired_p(a, b, 20_000, seed=2)
    assert not ours.exact and ours.resamples == 20_000
    assert 0.005 < reference.pvalue < 0.5  # a p-value where the comparison means something
    assert abs(ours.pvalue - reference.pvalue) < mc_tolerance(reference.pvalue, 20_000)


def test_random_p_value_counts_the_observed_statistic() -> None:
    """No random permutation reaches a huge effect: p = 2 / (R + 1), as scipy reports it."""
    a, b = paired_runs(100, 0.5, seed=3)
    ours = paired_permutation_mean(a, b, resamples=999, seed=0)
    assert ours.pvalue == 2 / 1000 == scipy_paired_p(a, b, 999, seed=1).pvalue
    values = np.r_[np.zeros(50), np.ones(50)]
    assert slice_vs_rest(values, values > 0, resamples=999).pvalue == 2 / 1000


def bleu_rows(n: int, seed: int, better: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-item BLEU statistics (correct_1..4, guess_1..4, testlen, reflen) of two runs."""
    rng = np.random.default_rng(seed)
    length = rng.integers(6, 14, n)
    reflen = length + rng.integers(-2, 3, n)
    guess = np.maximum(0, length[:, None] - np.arange(4))

    def run(rate: float) -> np.ndarray:
        correct = rng.binomial(guess, np.array([0.7, 0.45, 0.3, 0.2]) * rate)
        return np.column_stack([correct, guess, length, reflen]).astype(float)

    return run(1.0), run(better)


def scipy_corpus_permutation(stats_a: np.ndarray, stats_b: np.ndarray,
                             resamples: int) -> Any:  # scipy's PermutationTestResult
    """scipy on item indices into [A; B]: swapping a pair swaps the item's two rows."""
    both, n, bleu4 = np.vstack([stats_a, stats_b]), len(stats_a), bleu_statistic(4)

    def statistic(ia: np.ndarray, ib: np.ndarray, axis: int) -> np.ndarray:
        sums_a, sums_b = both[ia].sum(axis=-2), both[ib].sum(axis=-2)
        delta = bleu4(np.atleast_2d(sums_b)) - bleu4(np.atleast_2d(sums_a))
        return delta.reshape(ia.shape[:-1])

    return stats.permutation_test((np.arange(n), np.arange(n) + n), statistic,
                                  permutation_type="samples", n_resamples=resamples,
                                  rng=np.random.default_rng(0))


def test_corpus_permutation_equals_scipy() -> None:
    stats_a, stats_b = bleu_rows(9, seed=1, better=1.3)
    ours = paired_permutation_corpus(stats_a, stats_b, bleu_statistic(4), resamples=9999)
    reference = scipy_corpus_permutation(stats_a, stats_b, 9999)
    assert ours.exact and ours.pvalue == pytest.approx(reference.pvalue, abs=1e-12)
    stats_a, stats_b = bleu_rows(60, seed=2, better=1.03)
    ours = paired_permutation_corpus(stats_a, stats_b, bleu_statistic(4), 5000, seed=3)
    reference = scipy_corpus_permutation(stats_a, stats_b, 5000)
    assert ours.statistic == pytest.approx(float(reference.statistic), rel=1e-12)
    assert 0.005 < reference.pvalue < 0.5
    assert abs(ours.pvalue - reference.pvalue) < mc_tolerance(reference.pvalue, 5000)


def test_paired_bootstrap_uses_the_same_items_for_both_runs() -> None:
    a, b = paired_runs(300, 0.03, seed=4)
    for method, scipy_method in METHODS:
        ours = paired_bootstrap_mean(a, b, BootstrapSettings(1000, 0.95, method, seed=6))
        reference = stats.bootstrap((a, b), mean_delta, paired=True, n_resamples=1000,
                                    batch=chunk_rows(300), method=scipy_method,
                                    rng=np.random.default_rng(6)).confidence_interval
        assert (ours.low, ours.high) == pytest.approx(tuple(reference), rel=1e-9)
    # pairing matters: the paired interval is much narrower than unpaired resampling would be
    unpaired = stats.bootstrap((a, b), lambda x, y, axis: y.mean(axis) - x.mean(axis),
                               n_resamples=2000, method="percentile",
                               rng=np.random.default_rng(0))
    width = unpaired.confidence_interval.high - unpaired.confidence_interval.low
    assert ours.high - ours.low < 0.75 * width


def test_paired_corpus_bootstrap_equals_scipy() -> None:
    stats_a, stats_b = bleu_rows(200, seed=5, better=1.1)
    both, bleu4 = np.hstack([stats_a, stats_b]), bleu_statistic(4)

    def delta(i: np.ndarray, axis: int) -> np.ndarray:
        sums = np.atleast_2d(both[i].sum(axis=-2))
        return (bleu4(sums[:, 10:]) - bleu4(sums[:, :10])).reshape(i.shape[:-1])

    for method, scipy_method in METHODS:
        ours = paired_bootstrap_corpus(stats_a, stats_b, bleu4,
                                       BootstrapSettings(600, 0.95, method, seed=2))
        reference = stats.bootstrap((np.arange(200),), delta, n_resamples=600,
                                    batch=chunk_rows(200), method=scipy_method,
                                    rng=np.random.default_rng(2)).confidence_interval
        assert (ours.low, ours.high) == pytest.approx(tuple(reference), rel=1e-12)


def test_macro_f1_comparison_with_sparse_statistics() -> None:
    """Two classifiers on the same 500 items (8 classes); B is right more often."""
    rng = np.random.default_rng(13)
    truth = rng.integers(0, 8, 500)
    guess_a = np.where(rng.random(500) < 0.55, truth, rng.integers(0, 8, 500))
    guess_b = np.where(rng.random(500) < 0.70, truth, rng.integers(0, 8, 500))
    stats_a = confusion_contributions(truth, guess_a, 8)
    stats_b = confusion_contributions(truth, guess_b, 8)
    sparse_test = paired_permutation_corpus(stats_a, stats_b, macro_f1_statistic, 2000, seed=1)
    dense_test = paired_permutation_corpus(stats_a.toarray(), stats_b.toarray(),
                                           macro_f1_statistic, 2000, seed=1)
    assert sparse_test.pvalue == dense_test.pvalue < 0.01
    assert sparse_test.statistic == pytest.approx(dense_test.statistic, abs=1e-15)
    interval = paired_bootstrap_corpus(stats_a, stats_b, macro_f1_statistic,
                                       BootstrapSettings(500, method="bca", seed=3))
    assert interval.method == "bca" and 0 < interval.low < interval.estimate < interval.high


def test_identical_runs() -> None:
    a, _ = paired_runs(200, 0.0, seed=7)
    interval = paired_bootstrap_mean(a, a.copy(), BootstrapSettings(500, method="bca"))
    assert interval.contains(0.0) and interval.method == "percentile"  # degenerate BCa
    assert paired_permutation_mean(a, a.copy()).pvalue == 1.0
    stats_a, _ = bleu_rows(50, seed=7, better=1.0)
    assert paired_permutation_corpus(stats_a, stats_a.copy(), bleu_statistic(4)).pvalue == 1.0
    assert paired_bootstrap_corpus(stats_a, stats_a.copy(), bleu_statistic(4)).contains(0.0)
    hits = np.random.default_rng(0).random(100) < 0.5
    assert mcnemar(hits, hits).pvalue == 1.0 and math.isnan(mcnemar(hits, hits).odds_ratio)
    assert math.isnan(cohens_dz(a, a))


def test_planted_difference_is_significant() -> None:
    a, b = paired_runs(300, 0.05, seed=8)  # 0.05 shift, noise sd 0.2: d_z ~ 0.25
    result = paired_permutation_mean(a, b, resamples=4999, seed=1)
    assert result.pvalue < 0.001 and result.statistic == pytest.approx(np.mean(b - a))
    assert paired_bootstrap_mean(a, b).low > 0
    assert 0.15 < cohens_dz(a, b) < 0.35
    stats_a, stats_b = bleu_rows(300, seed=8, better=1.3)
    assert paired_permutation_corpus(stats_a, stats_b, bleu_statistic(4), 1999).pvalue < 0.01
    assert paired_bootstrap_corpus(stats_a, stats_b, bleu_statistic(4)).low > 0


def test_tiny_noisy_difference_is_not_significant() -> None:
    a, b = paired_runs(200, 0.001, seed=9)  # shift 0.001 vs standard error ~0.014
    assert paired_permutation_mean(a, b, resamples=4999).pvalue > 0.2
    assert paired_bootstrap_mean(a, b).contains(0.0)
    assert abs(cohens_dz(a, b)) < 0.1


def test_nan_pairs_are_dropped() -> None:
    a, b = paired_runs(50, 0.02, seed=10)
    a_nan, b_nan = np.r_[a, np.nan, 0.3], np.r_[b, 0.2, np.nan]
    assert paired_permutation_mean(a_nan, b_nan, 999) == paired_permutation_mean(a, b, 999)
    assert paired_bootstrap_mean(a_nan, b_nan) == paired_bootstrap_mean(a, b)
    with pytest.raises(ValueError):
        paired_bootstrap_mean(a, b[:-1])


def test_mcnemar_equals_binomtest() -> None:
    for a_only, b_only in [(0, 1), (1, 0), (3, 3), (5, 12), (12, 5), (0, 25), (40, 61),
                           (430, 500), (7, 8)]:
        a = np.r_[np.ones(a_only), np.zeros(b_only), np.ones(30), np.zeros(20)]
        b = np.r_[np.zeros(a_only), np.ones(b_only), np.ones(30), np.zeros(20)]
        result = mcnemar(a.astype(int), b.astype(bool))
        assert (result.a_only, result.b_only) == (a_only, b_only)
        expected = stats.binomtest(b_only, a_only + b_only, 0.5).pvalue
        assert result.pvalue == pytest.approx(expected, rel=1e-10)
        assert result.odds_ratio == (b_only / a_only if a_only else math.inf)
    with pytest.raises(ValueError):
        mcnemar([0, 1, 2], [0, 1, 1])


def test_cohens_dz_by_hand() -> None:
    assert cohens_dz([0, 0, 0, 0], [1, 2, 3, 4]) == pytest.approx(2.5 / np.std([1, 2, 3, 4],
                                                                               ddof=1))
    assert math.isnan(cohens_dz([1.0], [2.0]))


def test_holm_worked_example() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])
    assert holm([]).size == 0
    with pytest.raises(ValueError):
        holm([0.1, np.nan])


def test_holm_is_the_step_down_procedure() -> None:
    """adjusted <= alpha exactly where Holm's step-down test rejects at alpha."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.random(rng.integers(1, 12)) ** 3
        adjusted = holm(p)
        assert (adjusted >= p).all() and (adjusted <= np.minimum(1, p * p.size) + 1e-15).all()
        order = np.argsort(p)
        assert (np.diff(adjusted[order]) >= 0).all()
        for alpha in (0.01, 0.05, 0.2):
            passed = p[order] <= alpha / (p.size - np.arange(p.size))
            rejected = np.zeros(p.size, dtype=bool)
            rejected[order] = np.cumprod(passed).astype(bool)
            assert np.array_equal(adjusted <= alpha, rejected)


def test_holm_equals_statsmodels() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(1).random(20) ** 2
    assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1])


def test_slice_vs_rest_equals_scipy_independent() -> None:
    rng = np.random.default_rng(12)
    values = rng.normal(0, 1, 12)
    in_slice = np.zeros(12, dtype=bool)
    in_slice[[1, 4, 5, 9]] = True
    values[in_slice] += 0.8

    def difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    ours = slice_vs_rest(values, in_slice)
    reference = stats.permutation_test((values[in_slice], values[~in_slice]), difference,
                                       permutation_type="independent", n_resamples=9999)
    assert ours.exact and ours.resamples == math.comb(12, 4)
    assert ours.pvalue == pytest.approx(reference.pvalue, abs=1e-12)
    values = rng.normal(0, 1, 150)
    in_slice = rng.random(150) < 0.2
    values[in_slice] += 0.4
    ours = slice_vs_rest(values, in_slice, resamples=10_000, seed=4)
    reference = stats.permutation_test((values[in_slice], values[~in_slice]), difference,
                                       permutation_type="independent", n_resamples=10_000,
                                       rng=np.random.default_rng(5))
    assert not ours.exact and 0.005 < reference.pvalue < 0.5
    assert abs(ours.pvalue - reference.pvalue) < mc_tolerance(reference.pvalue, 10_000)


def test_slice_vs_rest_inputs() -> None:
    values = np.r_[np.arange(20.0), np.nan]
    in_slice = np.arange(21) < 5
    assert slice_vs_rest(values, in_slice, 999) == slice_vs_rest(values[:20], in_slice[:20],
                                                                 999)
    with pytest.raises(ValueError):
        slice_vs_rest(values, np.zeros(21, dtype=bool))
