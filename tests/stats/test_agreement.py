"""Agreement statistics against scipy / scikit-learn / krippendorff, and their intervals against
``scipy.stats.bootstrap`` of those references on the same resampling stream."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from tasks.stats.agreement import (
    Agreement,
    auroc,
    cohen_kappa,
    inter_rater,
    kendall,
    kendall_leave_one_out,
    kendall_of_resamples,
    krippendorff_alpha,
    pairwise_matrix,
    spearman,
    spearman_of_resamples,
    two_rater_overlap,
)
from tasks.stats.bootstrap import BootstrapSettings, Method
from tasks.stats.resampling import chunk_rows

SCIPY_METHOD = {"percentile": "percentile", "bca": "BCa"}


def correlated(n: int, seed: int, decimals: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A metric and a 1-5 human rating that follows it, both with many ties."""
    rng = np.random.default_rng(seed)
    metric = np.round(rng.normal(size=n), decimals)
    human = np.clip(np.round(3 + metric + rng.normal(size=n)), 1, 5)
    return metric, human


def two_raters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-5 raters who mostly agree within one point."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 6, n)
    return a, np.clip(a + rng.integers(-1, 2, n), 1, 5)


def reliability(raters: int, items: int, seed: int, missing: float = 0.3) -> np.ndarray:
    """raters x items 1-5 ratings around a per-item truth, a share of them missing (NaN)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, items)
    data = np.clip(truth + rng.integers(-1, 2, (raters, items)), 1, 5).astype(np.float64)
    data[rng.random(data.shape) < missing] = np.nan
    return data


def reference_alpha(level: Any) -> Callable[..., float]:
    """krippendorff.alpha of raters given as rows; NaN where it refuses (one value only)."""

    def statistic(*rows: np.ndarray) -> float:
        try:
            return float(krippendorff.alpha(np.vstack(rows), level_of_measurement=level))
        except ValueError:
            return math.nan

    return statistic


def scipy_interval(data: tuple[np.ndarray, ...], statistic: Callable[..., float],
                   settings: BootstrapSettings) -> tuple[float, float]:
    """scipy.stats.bootstrap of a reference statistic over items, on our resampling stream."""
    n = len(data[0])
    result = stats.bootstrap(
        data, statistic, paired=True, vectorized=False, n_resamples=settings.resamples,
        confidence_level=settings.level, method=SCIPY_METHOD[settings.method],
        batch=chunk_rows(n), rng=np.random.default_rng(settings.seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# ---- Spearman / Kendall -----------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "decimals"), [(0, 1), (1, 0), (2, 6)])
def test_correlations_equal_scipy_with_ties_and_missing(seed: int, decimals: int) -> None:
    metric, human = correlated(150, seed, decimals)
    metric[[3, 40]], human[[7, 40, 99]] = np.nan, np.nan
    keep = ~(np.isnan(metric) | np.isnan(human))
    rho = spearman(metric, human, BootstrapSettings(0))
    tau = kendall(metric, human, BootstrapSettings(0))
    assert rho.value == pytest.approx(stats.spearmanr(metric[keep], human[keep])[0], abs=1e-12)
    assert tau.value == pytest.approx(
        stats.kendalltau(metric[keep], human[keep], variant="b")[0], abs=1e-12)
    assert rho.n == tau.n == 146 and rho.method == "none"


def test_resampled_and_leave_one_out_correlations_equal_scipy() -> None:
    metric, human = correlated(80, seed=3)
    indices = np.random.default_rng(4).integers(0, 80, (6, 80))
    rhos = spearman_of_resamples(metric, human)(indices)
    taus = kendall_of_resamples(metric, human)(indices)
    assert rhos == pytest.approx([stats.spearmanr(metric[i], human[i])[0] for i in indices],
                                 abs=1e-12)
    assert taus == pytest.approx([stats.kendalltau(metric[i], human[i])[0] for i in indices],
                                 abs=1e-12)
    deleted = [stats.kendalltau(np.delete(metric, i), np.delete(human, i))[0] for i in range(80)]
    assert kendall_leave_one_out(metric, human) == pytest.approx(deleted, abs=1e-12)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_correlation_intervals_equal_scipy_bootstrap(method: Method) -> None:
    metric, human = correlated(60, seed=5)
    settings = BootstrapSettings(200, 0.9, method, seed=8)
    for ours, reference in ((spearman, lambda x, y: stats.spearmanr(x, y)[0]),
                            (kendall, lambda x, y: stats.kendalltau(x, y)[0])):
        result = ours(metric, human, settings)
        assert result.method == method and result.undefined == 0
        expected = scipy_interval((metric, human), reference, settings)
        assert (result.ci_low, result.ci_high) == pytest.approx(expected, abs=1e-12)


def test_correlation_edge_cases() -> None:
    x = np.arange(10.0)
    for statistic in (spearman, kendall):
        perfect = statistic(x, 2 * x + 1)
        assert perfect.value == pytest.approx(1.0) and perfect.ci_low == pytest.approx(1.0)
        assert statistic(x, -x).value == pytest.approx(-1.0)
        constant = statistic(x, np.full(10, 3.0))
        assert math.isnan(constant.value) and "constant" in constant.reason
        assert math.isnan(constant.ci_low) and constant.method == "none"
        few = statistic([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, np.nan])
        assert math.isnan(few.value) and few.n == 2 and "need 3" in few.reason
        with pytest.raises(ValueError, match="infinite"):
            statistic([1.0, 2.0, np.inf], [1.0, 2.0, 3.0])


def test_resamples_with_a_constant_side_are_dropped_and_counted() -> None:
    metric, human = correlated(20, seed=6)
    human = np.zeros(20)
    human[[2, 11]] = 1.0  # P(neither drawn) = 0.9 ** 20 ~ 12 %
    for statistic in (spearman, kendall):
        result = statistic(metric, human, BootstrapSettings(400, seed=1))
        assert 20 < result.undefined < 90
        assert -1 <= result.ci_low <= result.ci_high <= 1


# ---- AUROC ------------------------------------------------------------------------------------


def test_auroc_equals_sklearn_with_ties_direction_and_missing() -> None:
    metric, human = correlated(200, seed=7)
    verdict = (human >= 3).tolist()
    verdict[5] = None
    metric[9] = np.nan
    keep = np.array([v is not None for v in verdict]) & ~np.isnan(metric)
    labels = np.array([bool(v) for v in np.asarray(verdict, dtype=object)[keep]])
    high = auroc(metric, verdict, True, BootstrapSettings(0))
    low = auroc(metric, verdict, False, BootstrapSettings(0))
    assert high.value == pytest.approx(roc_auc_score(labels, metric[keep]), abs=1e-14)
    assert low.value == pytest.approx(roc_auc_score(labels, -metric[keep]), abs=1e-14)
    assert high.n == 198
    assert auroc([0.1, 0.1, 0.1], [False, True, True]).value == 0.5


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_auroc_interval_equals_scipy_bootstrap_of_sklearn(method: Method) -> None:
    metric, human = correlated(120, seed=8)
    verdict = human >= 3
    settings = BootstrapSettings(200, 0.9, method, seed=3)
    result = auroc(metric, verdict, True, settings)
    expected = scipy_interval((metric, verdict), lambda s, y: roc_auc_score(y, s), settings)
    assert result.method == method
    assert (result.ci_low, result.ci_high) == pytest.approx(expected, abs=1e-12)


def test_auroc_one_class_and_bad_verdicts() -> None:
    one = auroc([0.2, 0.5, 0.9], [True, True, None])
    assert math.isnan(one.value) and "one class" in one.reason and one.n == 2
    with pytest.raises(ValueError, match="verdicts"):
        auroc([0.2, 0.5], [0, 2])
    metric = np.linspace(0, 1, 25)
    rare = np.zeros(25, dtype=bool)
    rare[[4, 20]] = True
    result = auroc(metric, rare, True, BootstrapSettings(300, seed=2))
    assert result.undefined > 0 and 0 <= result.ci_low <= result.ci_high <= 1


# ---- Cohen's kappa ----------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_kappa_equals_sklearn(weights: Any) -> None:
    for seed in (0, 1, 2):
        a, b = two_raters(300, seed)
        ours = cohen_kappa(a, b, weights, BootstrapSettings(0))
        assert ours.value == pytest.approx(cohen_kappa_score(a, b, weights=weights), abs=1e-12)
        names = np.array(["bad", "fair", "good", "great", "ideal"])
        as_text = cohen_kappa(names[a - 1], names[b - 1], weights, BootstrapSettings(0))
        assert as_text.value == pytest.approx(ours.value, abs=1e-12)
    a, b = two_raters(100, 3)
    a[a == 3] = 2  # label 3 only used by rater b; a scale label neither used: 6
    scale = [1, 2, 3, 4, 5, 6]
    assert cohen_kappa(a, b, weights, BootstrapSettings(0), scale).value == pytest.approx(
        cohen_kappa_score(a, b, weights=weights, labels=scale), abs=1e-12)


def test_kappa_missing_labels_are_dropped() -> None:
    a = ["x", "y", None, "x", "y", "x", float("nan")]
    b = ["x", "y", "y", "y", "y", None, "x"]
    result = cohen_kappa(a, b, settings=BootstrapSettings(0))
    assert result.n == 4 and result.raters == 2
    assert result.value == pytest.approx(cohen_kappa_score(["x", "y", "x", "y"],
                                                           ["x", "y", "y", "y"]))


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_kappa_interval_equals_scipy_bootstrap_of_sklearn(method: Method) -> None:
    a, b = two_raters(80, seed=4)
    settings = BootstrapSettings(200, 0.9, method, seed=5)
    result = cohen_kappa(a, b, "quadratic", settings)
    expected = scipy_interval(
        (a, b), lambda x, y: cohen_kappa_score(x, y, weights="quadratic"), settings)
    assert result.method == method
    assert (result.ci_low, result.ci_high) == pytest.approx(expected, abs=1e-12)


def test_kappa_edge_cases() -> None:
    perfect = cohen_kappa(["a", "b", "c", "a"], ["a", "b", "c", "a"])
    assert perfect.value == 1.0 and perfect.statistic == "cohen_kappa"
    same = cohen_kappa([1, 1, 1], [1, 1, 1], "linear")
    assert math.isnan(same.value) and "no expected disagreement" in same.reason
    assert same.statistic == "cohen_kappa_linear"
    assert cohen_kappa([1, 1, 1], [2, 2, 2]).value == pytest.approx(
        cohen_kappa_score([1, 1, 1], [2, 2, 2]))  # 0: disagreement expected and observed
    empty = cohen_kappa([None, 1], [2, None])
    assert math.isnan(empty.value) and empty.n == 0
    with pytest.raises(ValueError, match="not in labels"):
        cohen_kappa([1, 2], [2, 3], labels=[1, 2])


# ---- Krippendorff's alpha ---------------------------------------------------------------------


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_alpha_equals_krippendorff_with_missing_and_several_raters(level: Any) -> None:
    for raters, seed, missing in ((2, 0, 0.0), (3, 1, 0.3), (6, 2, 0.5)):
        data = reliability(raters, 120, seed, missing)
        ours = krippendorff_alpha(data, level, BootstrapSettings(0))
        assert ours.value == pytest.approx(
            krippendorff.alpha(data, level_of_measurement=level), abs=1e-12)
        assert ours.n == int(((~np.isnan(data)).sum(axis=0) >= 2).sum())
        assert ours.raters == raters


def test_alpha_interval_level_with_continuous_values() -> None:
    rng = np.random.default_rng(9)
    data = 1e6 + rng.normal(size=60) + rng.normal(scale=0.5, size=(4, 60))
    data[rng.random(data.shape) < 0.2] = np.nan
    assert krippendorff_alpha(data, "interval", BootstrapSettings(0)).value == pytest.approx(
        krippendorff.alpha(data, level_of_measurement="interval"), abs=1e-9)


@pytest.mark.parametrize(("method", "level"), [("percentile", "ordinal"), ("bca", "nominal"),
                                               ("bca", "interval")])
def test_alpha_interval_equals_scipy_bootstrap_of_krippendorff(method: Method,
                                                               level: Any) -> None:
    data = reliability(3, 40, seed=10, missing=0.0)
    settings = BootstrapSettings(150, 0.9, method, seed=6)
    result = krippendorff_alpha(data, level, settings)
    expected = scipy_interval(tuple(data), reference_alpha(level), settings)
    assert result.method == method and result.undefined == 0
    assert (result.ci_low, result.ci_high) == pytest.approx(expected, abs=1e-12)


def test_alpha_edge_cases() -> None:
    perfect = np.array([[1.0, 2.0, 3.0, np.nan], [1.0, 2.0, 3.0, 2.0], [np.nan, 2.0, 3.0, 2.0]])
    for level in ("nominal", "ordinal", "interval"):
        assert krippendorff_alpha(perfect, level).value == pytest.approx(1.0)
    constant = krippendorff_alpha(np.full((3, 5), 4.0), "ordinal")
    assert math.isnan(constant.value) and "equal" in constant.reason and constant.n == 5
    lonely = krippendorff_alpha(np.array([[1.0, np.nan, 3.0], [np.nan, 2.0, np.nan]]))
    assert math.isnan(lonely.value) and lonely.n == 0 and "two or more" in lonely.reason
    # items with one rating are ignored: same value with them removed
    data = reliability(3, 50, seed=11, missing=0.6)
    pairable = data[:, (~np.isnan(data)).sum(axis=0) >= 2]
    assert pairable.shape[1] < 50
    assert krippendorff_alpha(data, "ordinal", BootstrapSettings(0)).value == pytest.approx(
        krippendorff.alpha(pairable, level_of_measurement="ordinal"), abs=1e-12)
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(perfect, "ratio")  # type: ignore[arg-type]


# ---- interval behaviour -----------------------------------------------------------------------


def all_agreements(n: int, settings: BootstrapSettings) -> list[Agreement]:
    metric, human = correlated(n, seed=12)
    a, b = two_raters(n, seed=13)
    data = reliability(4, n, seed=14)
    return [spearman(metric, human, settings), kendall(metric, human, settings),
            auroc(metric, human >= 3, True, settings), cohen_kappa(a, b, "quadratic", settings),
            krippendorff_alpha(data, "ordinal", settings)]


def test_intervals_contain_estimate_reproduce_and_shrink() -> None:
    settings = BootstrapSettings(300, seed=3)
    small, again = all_agreements(80, settings), all_agreements(80, settings)
    other = all_agreements(80, BootstrapSettings(300, seed=4))
    large = all_agreements(640, settings)
    for s, a, o, big in zip(small, again, other, large, strict=True):
        assert s.ci_low < s.value < s.ci_high and big.ci_low < big.value < big.ci_high
        assert s == a and (s.ci_low, s.ci_high) != (o.ci_low, o.ci_high)
        assert big.ci_high - big.ci_low < 0.7 * (s.ci_high - s.ci_low)


def test_to_json_is_strict_json() -> None:
    undefined = spearman([1.0, 2.0], [1.0, 2.0])
    data = undefined.to_json()
    assert data["value"] is None and data["ci_low"] is None and data["n"] == 2
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    defined = kendall(np.arange(5.0), np.arange(5.0), BootstrapSettings(50))
    assert defined.to_json()["value"] == pytest.approx(1.0)


# ---- long ratings tables ----------------------------------------------------------------------


def long_table(data: np.ndarray, names: list[str] | None = None) -> pd.DataFrame:
    """One row per (item, rater) of a raters x items array (NaN cells left out)."""
    rows = [{"review_id": f"i{item:03d}", "reviewer": f"r{rater}",
             "value": names[int(v)] if names else v}
            for rater, values in enumerate(data) for item, v in enumerate(values)
            if not np.isnan(v)]
    return pd.DataFrame(rows)


def test_pairwise_matrix_and_overlap() -> None:
    table = pd.DataFrame({"review_id": ["a", "a", "b", "c", "c", "d"],
                          "reviewer": ["x", "y", "x", "y", "x", "y"],
                          "value": ["no", "yes", "yes", "no", "no", None]})
    matrix = pairwise_matrix(table)
    assert np.array_equal(matrix, np.array([[0, 1, 0], [1, np.nan, 0]]), equal_nan=True)
    a, b = two_rater_overlap(table)
    assert list(a) == ["no", "no"] and list(b) == ["yes", "no"]
    with pytest.raises(ValueError, match="twice"):
        pairwise_matrix(pd.concat([table, table.iloc[:1]]))
    with pytest.raises(ValueError, match="exactly 2"):
        two_rater_overlap(table[table["reviewer"] == "x"])


def test_inter_rater_ratings_with_two_raters() -> None:
    data = reliability(2, 90, seed=15, missing=0.2)
    data[data == 3] = 2  # scale 1-5 with 3 unused: quadratic weights still over values
    summary = inter_rater(long_table(data), "rating", BootstrapSettings(100))
    both = ~np.isnan(data).any(axis=0)
    kappa = cohen_kappa_score(data[0, both], data[1, both], weights="quadratic",
                              labels=[1, 2, 3, 4, 5])
    assert summary["raters"] == 2 and summary["pairable_items"] == int(both.sum())
    assert summary["cohen_kappa"]["value"] == pytest.approx(kappa, abs=1e-12)
    assert summary["cohen_kappa"]["statistic"] == "cohen_kappa_quadratic"
    assert summary["krippendorff_alpha"]["value"] == pytest.approx(
        krippendorff.alpha(data, level_of_measurement="ordinal"), abs=1e-12)
    json.dumps(summary, allow_nan=False)


def test_inter_rater_choices_with_three_raters() -> None:
    data = reliability(3, 70, seed=16, missing=0.4)
    table = long_table(data, ["", "bad", "poor", "fine", "good", "great"])
    summary = inter_rater(table, "choice", BootstrapSettings(100))
    assert summary["raters"] == 3 and summary["cohen_kappa"] is None
    assert summary["pairable_items"] == int(((~np.isnan(data)).sum(axis=0) >= 2).sum())
    assert summary["krippendorff_alpha"]["value"] == pytest.approx(
        krippendorff.alpha(data, level_of_measurement="nominal"), abs=1e-12)
    assert summary["krippendorff_alpha"]["statistic"] == "krippendorff_alpha_nominal"
    empty = inter_rater(table.iloc[:0], "choice")
    assert empty["pairable_items"] == 0 and empty["krippendorff_alpha"]["value"] is None
