"""The unpaired (two-sample) bootstrap of a metric difference against scipy.stats.bootstrap and
against a brute-force loop over the same resampled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from tasks.stats import BootstrapSettings
from tasks.stats.estimates import Estimate, mean, point_value
from tasks.stats.resampling import index_chunks
from tasks.stats.unpaired import unpaired_gap
from tests.stats.test_bootstrap import mc_tolerance


def test_mean_gap_agrees_with_scipy_two_sample_bootstrap():
    rng = np.random.default_rng(3)
    train = pd.DataFrame({"hit": (rng.random(400) < 0.7).astype(float)})
    test = pd.DataFrame({"hit": (rng.random(250) < 0.55).astype(float)})
    settings = BootstrapSettings(4000, 0.95, "percentile", seed=5)
    gap = unpaired_gap(mean("hit"), test, train, settings)
    reference = stats.bootstrap(
        (test["hit"].to_numpy(), train["hit"].to_numpy()),
        lambda a, b, axis: b.mean(axis=axis) - a.mean(axis=axis), paired=False,
        vectorized=True, n_resamples=4000, method="percentile", rng=np.random.default_rng(9))
    assert gap.a == test["hit"].mean() and gap.b == train["hit"].mean()
    assert gap.difference == gap.b - gap.a
    boot = reference.bootstrap_distribution
    tolerance = mc_tolerance(boot, 4000, lattice=1 / 250)
    assert abs(gap.interval.low - reference.confidence_interval.low) < tolerance
    assert abs(gap.interval.high - reference.confidence_interval.high) < tolerance
    assert gap.interval.low < gap.difference < gap.interval.high


def brute_ratio(rows: pd.DataFrame, indices: np.ndarray) -> float:
    picked = rows.iloc[indices]
    return float(picked["hits"].sum() / picked["captions"].sum())


def test_corpus_statistic_is_recomputed_on_every_resample_of_each_side():
    """A ratio metric (hits / captions, images as the unit): the gap's replicates are the
    ratio of each side's resampled rows, drawn from independent streams seed and seed + 1."""
    rng = np.random.default_rng(1)
    a = pd.DataFrame({"captions": rng.integers(1, 6, 60).astype(float)})
    a["hits"] = np.minimum(a["captions"], rng.integers(0, 6, 60))
    b = pd.DataFrame({"captions": rng.integers(1, 6, 45).astype(float)})
    b["hits"] = np.minimum(b["captions"], rng.integers(0, 6, 45))
    estimate = Estimate("ratio", ("hits", "captions"))
    settings = BootstrapSettings(300, 0.9, "percentile", seed=2)
    gap = unpaired_gap(estimate, a, b, settings)
    boot_a = [brute_ratio(a, row) for chunk in index_chunks(60, 300, 2) for row in chunk]
    boot_b = [brute_ratio(b, row) for chunk in index_chunks(45, 300, 3) for row in chunk]
    low, high = np.quantile(np.array(boot_b) - np.array(boot_a), [0.05, 0.95])
    assert gap.difference == point_value(estimate, b) - point_value(estimate, a)
    assert np.isclose(gap.interval.low, low) and np.isclose(gap.interval.high, high)


def test_no_interval_without_resampling_or_with_one_item():
    one = pd.DataFrame({"hit": [1.0]})
    many = pd.DataFrame({"hit": [0.0, 1.0, 1.0]})
    gap = unpaired_gap(mean("hit"), one, many, BootstrapSettings(100))
    assert np.isnan(gap.interval.low) and gap.difference == 2 / 3 - 1
    off = unpaired_gap(mean("hit"), many, many, BootstrapSettings(0))
    assert off.difference == 0 and np.isnan(off.interval.high)
