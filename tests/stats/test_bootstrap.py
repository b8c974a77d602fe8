"""Bootstrap intervals against scipy.stats.bootstrap, closed forms against brute force, edges.

Two kinds of comparison with scipy: with the same random stream (``rng=default_rng(seed)`` and
``batch=chunk_rows(n)``) the resampled items are identical, so the intervals must agree to
rounding; with independent seeds they must agree within Monte-Carlo error (see
``mc_tolerance``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from tasks.stats import (
    BootstrapSettings,
    Interval,
    bootstrap_corpus,
    bootstrap_indices,
    bootstrap_mean,
    bootstrap_median,
)
from tasks.stats.bootstrap import Method, leave_one_out_indices, leave_one_out_sums
from tasks.stats.rank import median_leave_one_out, median_of_resamples
from tasks.stats.resampling import (
    CHUNK_ELEMENTS,
    GATHER_COLUMNS,
    chunk_rows,
    counts,
    index_chunks,
    resampled_sums,
)

SCIPY_METHOD = {"percentile": "percentile", "bca": "BCa"}


def datasets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2024)
    return {
        "normal": rng.normal(0.3, 1.0, 500),
        "skewed": rng.exponential(1.0, 200),
        "hits": (rng.random(400) < 0.3).astype(np.float64),
        "clip_like": np.clip(rng.normal(0.72, 0.05, 5000), 0, 1),  # several chunks
    }


def scipy_interval(
    data: np.ndarray, statistic: Callable[..., np.ndarray], method: str, resamples: int,
    seed: int, batch: int | None = None,
) -> tuple[float, float, np.ndarray]:
    result = stats.bootstrap((data,), statistic, n_resamples=resamples, batch=batch,
                             method=SCIPY_METHOD[method], rng=np.random.default_rng(seed))
    ci = result.confidence_interval
    return float(ci.low), float(ci.high), result.bootstrap_distribution


def mc_tolerance(boot: np.ndarray, resamples: int, lattice: float = 0.0) -> float:
    """Allowed difference between two independent bootstrap endpoints.

    A 2.5 % quantile of ``B`` draws has standard error ``sqrt(p (1 - p) / B) / f(q)``; for a
    roughly normal bootstrap distribution with sd ``s``, ``f(q) = phi(1.96) / s``, i.e.
    ``2.67 s / sqrt(B)``. The difference of two independent estimates has sqrt(2) times that;
    allow 6 of those standard errors, plus one lattice step for discrete statistics.
    """
    return 6 * math.sqrt(2) * 2.67 * float(np.std(boot)) / math.sqrt(resamples) + lattice


@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("name", ["normal", "skewed", "hits", "clip_like"])
def test_mean_interval_equals_scipy_on_the_same_stream(name: str, method: Method) -> None:
    data = datasets()[name]
    ours = bootstrap_mean(data, BootstrapSettings(1000, 0.95, method, seed=11))
    low, high, _ = scipy_interval(data, np.mean, method, 1000, 11, chunk_rows(data.size))
    assert ours.method == method
    assert ours.low == pytest.approx(low, rel=1e-12, abs=1e-12)
    assert ours.high == pytest.approx(high, rel=1e-12, abs=1e-12)
    assert ours.estimate == pytest.approx(float(np.mean(data)), rel=1e-15)


@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("name", ["normal", "skewed", "hits"])
def test_mean_interval_matches_scipy_within_monte_carlo_error(name: str, method: Method) -> None:
    data = datasets()[name]
    resamples = 20_000
    ours = bootstrap_mean(data, BootstrapSettings(resamples, 0.95, method, seed=1))
    low, high, boot = scipy_interval(data, np.mean, method, resamples, seed=99)
    tolerance = mc_tolerance(boot, resamples, lattice=1 / data.size if name == "hits" else 0)
    assert abs(ours.low - low) < tolerance
    assert abs(ours.high - high) < tolerance
    # the tolerance is far tighter than the interval: a wrong level or centre would fail
    assert tolerance < 0.1 * (high - low)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_median_interval_equals_scipy(method: Method) -> None:
    data = np.random.default_rng(3).lognormal(0, 1, 301)
    ours = bootstrap_median(data, BootstrapSettings(2000, 0.9, method, seed=5))
    result = stats.bootstrap((data,), np.median, n_resamples=2000, confidence_level=0.9,
                             batch=chunk_rows(data.size), method=SCIPY_METHOD[method],
                             rng=np.random.default_rng(5))
    assert (ours.low, ours.high) == pytest.approx(tuple(result.confidence_interval), rel=1e-12)
    # independent seeds: within Monte-Carlo error (plus the spacing of the order statistics)
    other = bootstrap_median(data, BootstrapSettings(20_000, 0.9, method, seed=6))
    low, high, boot = scipy_interval(data, np.median, method, 20_000, seed=7)
    spacing = float(np.diff(np.sort(data))[140:160].max())
    tolerance = mc_tolerance(boot, 20_000, lattice=spacing)
    assert abs(other.low - low) < tolerance and abs(other.high - high) < tolerance


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_corpus_form_equals_scipy_with_a_sums_statistic(method: Method) -> None:
    """A ratio of sums (micro precision-like) from per-item statistics, on the same stream."""
    rng = np.random.default_rng(8)
    per_item = np.column_stack([rng.poisson(3, 700), rng.poisson(5, 700) + 1]).astype(float)

    def ratio(sums: np.ndarray) -> np.ndarray:
        return sums[..., 0] / sums[..., 1]

    ours = bootstrap_corpus(per_item, ratio, BootstrapSettings(1500, 0.95, method, seed=4))
    result = stats.bootstrap(
        (np.arange(700),), lambda i, axis: ratio(per_item[i].sum(axis=-2)),
        n_resamples=1500, batch=chunk_rows(700), method=SCIPY_METHOD[method],
        rng=np.random.default_rng(4))
    assert (ours.low, ours.high) == pytest.approx(tuple(result.confidence_interval), rel=1e-12)


def test_the_three_forms_agree_on_a_mean() -> None:
    """Same seed -> same resampled items in every form, so the same interval for a mean."""
    x = np.random.default_rng(0).random(257)
    settings = BootstrapSettings(800, 0.9, "bca", seed=3)
    by_mean = bootstrap_mean(x, settings)
    by_sums = bootstrap_corpus(x[:, None], lambda s: s[:, 0] / x.size, settings)
    by_index = bootstrap_indices(x.size, lambda idx: x[idx].mean(axis=1), settings)
    for other in (by_sums, by_index):
        assert other.low == pytest.approx(by_mean.low, rel=1e-12)
        assert other.high == pytest.approx(by_mean.high, rel=1e-12)


def test_seeded_and_deterministic() -> None:
    x = datasets()["skewed"]
    first = bootstrap_mean(x, BootstrapSettings(500, method="bca", seed=42))
    assert bootstrap_mean(x, BootstrapSettings(500, method="bca", seed=42)) == first
    assert bootstrap_mean(x, BootstrapSettings(500, method="bca", seed=43)) != first


def test_chunks_bound_memory_and_cover_all_resamples() -> None:
    for n in (10, 25_000, CHUNK_ELEMENTS * 2):
        rows = chunk_rows(n)
        assert rows * n <= max(CHUNK_ELEMENTS, n)
    shapes = [chunk.shape for chunk in index_chunks(25_000, 100, seed=0)]
    assert sum(rows for rows, _ in shapes) == 100
    assert all(rows * width <= CHUNK_ELEMENTS for rows, width in shapes)


def test_nan_items_are_dropped_and_infinities_refused() -> None:
    x = datasets()["normal"][:100]
    with_nan = np.insert(x, [3, 50, 50], np.nan)
    settings = BootstrapSettings(300, seed=1)
    assert bootstrap_mean(with_nan, settings) == bootstrap_mean(x, settings)
    with pytest.raises(ValueError, match="infinite"):
        bootstrap_mean(np.r_[x, np.inf], settings)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_corpus(np.c_[x, x * np.nan], lambda s: s[:, 0], settings)


def test_undefined_intervals() -> None:
    assert math.isnan(bootstrap_mean([0.5]).low) and bootstrap_mean([0.5]).estimate == 0.5
    assert bootstrap_mean([np.nan, np.nan]).method == "none"
    off = bootstrap_mean([0.1, 0.2, 0.4], BootstrapSettings(resamples=0))
    assert math.isnan(off.low) and math.isnan(off.high) and off.method == "none"
    assert off.estimate == pytest.approx(0.7 / 3)
    assert not Interval(math.nan, math.nan).contains(0.0)


def test_bca_falls_back_to_percentile_when_degenerate() -> None:
    constant = bootstrap_mean(np.full(50, 0.8), BootstrapSettings(200, method="bca"))
    assert constant.method == "percentile" and "BCa" in constant.fallback
    assert constant.low == constant.high == pytest.approx(0.8)
    # distinct items drawn: every resample has fewer than the full sample -> z0 = -inf
    distinct = bootstrap_indices(
        30, lambda idx: np.array([np.unique(row).size for row in idx], dtype=float),
        BootstrapSettings(300, method="bca", seed=2))
    assert distinct.estimate == 30 and distinct.method == "percentile"
    assert "one side" in distinct.fallback and distinct.high < 30


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        BootstrapSettings(resamples=-1)
    with pytest.raises(ValueError):
        BootstrapSettings(level=1.0)
    with pytest.raises(ValueError):
        BootstrapSettings(method="basic")  # type: ignore[arg-type]


def test_leave_one_out_shortcuts_equal_brute_force() -> None:
    rng = np.random.default_rng(1)
    for n in (7, 8, 51):
        x = rng.integers(0, 5, n).astype(float)  # ties on purpose
        brute = [np.median(np.delete(x, i)) for i in range(n)]
        assert np.array_equal(median_leave_one_out(x), brute)
        assert np.array_equal(leave_one_out_indices(n, median_of_resamples(x)), brute)
    per_item = rng.random((40, 3))
    statistic = lambda s: s[:, 0] * s[:, 1] / s[:, 2]  # noqa: E731
    brute = [statistic(np.delete(per_item, i, axis=0).sum(axis=0)[None])[0] for i in range(40)]
    assert leave_one_out_sums(per_item, statistic) == pytest.approx(brute, rel=1e-12)


def test_resampled_sums_are_counts_times_statistics() -> None:
    rng = np.random.default_rng(4)
    indices = rng.integers(0, 60, (7, 60))
    for k in (1, 3, GATHER_COLUMNS + 4):  # gathered column by column, and counts @ stats
        per_item = rng.random((60, k))
        expected = np.stack([per_item[row].sum(axis=0) for row in indices])
        assert resampled_sums(per_item)(indices) == pytest.approx(expected, rel=1e-13)
        assert counts(indices, 60) @ per_item == pytest.approx(expected, rel=1e-13)
