"""Calibration: repeated samples from known distributions.

With ``R = 2000`` repetitions the estimated coverage of a 95 % interval has a standard error of
``sqrt(0.95 * 0.05 / 2000) = 0.0049``, so the accepted band 93-97 % is four standard errors
either side of 95 %: a correct method fails with probability < 1e-4, while an interval at the
wrong level (90 % or 99 %) or with a biased centre lands far outside. Likewise for the type-I
error of the permutation test at 5 % (band 3-7 %, four standard errors of 0.0049). Seeds are
fixed, so the outcome is reproducible; the data and the resampling use separate streams.
"""

from __future__ import annotations

import numpy as np

from tasks.stats import (
    BootstrapSettings,
    bootstrap_corpus,
    bootstrap_mean,
    paired_permutation_mean,
)

REPETITIONS = 2000


def test_percentile_interval_covers_a_normal_mean() -> None:
    data = np.random.default_rng(20240101)
    covered = 0
    for repetition in range(REPETITIONS):
        sample = data.normal(1.0, 2.0, 200)
        interval = bootstrap_mean(sample, BootstrapSettings(999, 0.95, seed=repetition))
        covered += interval.contains(1.0)
    assert 0.93 <= covered / REPETITIONS <= 0.97


def test_bca_interval_covers_a_bernoulli_mean() -> None:
    """Hit-rate metrics (recall@k, accuracy): p = 0.2, n = 300, a skewed sampling law."""
    data = np.random.default_rng(20240102)
    covered = 0
    for repetition in range(REPETITIONS):
        hits = (data.random(300) < 0.2).astype(float)
        interval = bootstrap_mean(hits, BootstrapSettings(999, 0.95, "bca", seed=repetition))
        covered += interval.contains(0.2)
    assert 0.93 <= covered / REPETITIONS <= 0.97


def test_percentile_interval_covers_a_ratio_of_sums() -> None:
    """A corpus metric that is not a mean: sum(x) / sum(y), true value E[x] / E[y] = 0.4."""
    data = np.random.default_rng(20240103)
    covered = 0
    for repetition in range(REPETITIONS // 2):
        y = data.poisson(10.0, 300) + 1.0
        x = data.binomial(y.astype(int), 0.4).astype(float)
        interval = bootstrap_corpus(np.c_[x, y], lambda s: s[:, 0] / s[:, 1],
                                    BootstrapSettings(999, 0.95, seed=repetition))
        covered += interval.contains(0.4)
    # 1000 repetitions: standard error 0.0069, band 93-97 % is 2.9 standard errors either side
    assert 0.93 <= covered / (REPETITIONS // 2) <= 0.97


def test_paired_permutation_test_holds_its_level() -> None:
    data = np.random.default_rng(20240104)
    rejected = 0
    for repetition in range(REPETITIONS):
        a = data.random(40)
        b = a + data.laplace(0.0, 0.1, 40)  # symmetric differences: H0 holds
        rejected += paired_permutation_mean(a, b, resamples=199, seed=repetition).pvalue <= 0.05
    assert 0.03 <= rejected / REPETITIONS <= 0.07
