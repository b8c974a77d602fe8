"""Agreement of automatic metrics with human ratings, and of human raters with each other.

Protocol (every interval comes from :mod:`tasks.stats.bootstrap`: same seed, same interval):

* Unit of resampling: the item. Correlations and AUROC resample the (metric, human) pairs;
  Cohen's kappa the items both raters rated; Krippendorff's alpha the pairable items (rated by
  two or more raters) with all their ratings. (Hayes & Krippendorff 2007 resample pairs of
  values instead; resampling items keeps an item's ratings together, as everywhere here.)
* Missing values: pairs with a NaN on either side are dropped first (``None``/``NaN`` labels
  for kappa); infinities raise. An undefined value is NaN with ``Agreement.reason`` saying why.
* Resamples on which a statistic is undefined are left out of the interval and counted in
  ``Agreement.undefined``: a side constant on the resample (Spearman, Kendall), one class only
  (AUROC: single-class resamples are dropped, not stratified), no expected disagreement
  (kappa, alpha: one label only).
* References: ``scipy.stats.spearmanr`` (rho of mid-ranks), ``scipy.stats.kendalltau``
  (tau-b), ``sklearn.metrics.roc_auc_score`` (Mann-Whitney, ties 1/2),
  ``sklearn.metrics.cohen_kappa_score`` (weights over label positions, not values) and
  ``krippendorff.alpha`` (coincidence matrix; ordinal distances from mid-ranks of the values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.stats import rankdata

from tasks.stats.bootstrap import (
    DEFAULT_SETTINGS,
    BootstrapSettings,
    Interval,
    bootstrap_corpus,
    bootstrap_indices,
)
from tasks.stats.paired import paired_values
from tasks.stats.rank import bootstrap_auroc
from tasks.stats.resampling import IndexStatistic, SumsStatistic, chunk_rows, counts

Level = Literal["nominal", "ordinal", "interval"]
KappaWeights = Literal["linear", "quadratic"] | None
FieldKind = Literal["rating", "choice"]
# labels / verdicts may hold None or pandas NA for missing
LabelsLike: TypeAlias = "ArrayLike | Sequence[Any] | pd.Series"


@dataclass(frozen=True)
class Agreement:
    """An agreement statistic with its bootstrap interval.

    ``n``: items used; ``raters``: raters involved (None for metric vs human); ``level``: the
    interval's confidence level; ``method``: the interval method used ("none" when undefined);
    ``undefined``: resamples left out; ``reason``: why the value is undefined, or why BCa fell
    back to percentile.
    """

    statistic: str
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0
    raters: int | None = None
    level: float = DEFAULT_SETTINGS.level
    method: str = "none"
    undefined: int = 0
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """The fields as a dict, NaN as None (strict JSON)."""
        return {key: None if isinstance(value, float) and math.isnan(value) else value
                for key, value in asdict(self).items()}


def _agreement(statistic: str, interval: Interval, n: int, settings: BootstrapSettings,
               raters: int | None = None, undefined_reason: str = "") -> Agreement:
    """An Agreement from a bootstrap Interval; ``undefined_reason`` applies if value is NaN."""
    reason = undefined_reason if math.isnan(interval.estimate) else interval.fallback
    return Agreement(statistic, interval.estimate, interval.low, interval.high, n, raters,
                     settings.level, interval.method, interval.undefined, reason)


def _undefined(statistic: str, n: int, reason: str, settings: BootstrapSettings,
               raters: int | None = None) -> Agreement:
    return Agreement(statistic, math.nan, n=n, raters=raters, level=settings.level,
                     reason=reason)


# ---- metric vs human: rank correlations -------------------------------------------------------


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of every row pair; NaN where a row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    scale = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / scale
    return np.where(scale > 0, np.clip(r, -1.0, 1.0), math.nan)


def spearman_of_resamples(x: np.ndarray, y: np.ndarray) -> IndexStatistic:
    """``fn(indices (b, n)) ->`` Spearman's rho of every resample: Pearson r of the mid-ranks
    (``rankdata(method="average")``) of the drawn values, as ``scipy.stats.spearmanr``."""
    return lambda idx: _pearson_rows(rankdata(x[idx], axis=1), rankdata(y[idx], axis=1))


def _pair_products(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(3, b, n)``: ``weights @ M`` for ``M = sign(dx) sign(dy)``, ``|sign(dx)|``,
    ``|sign(dy)|`` (``d`` over all item pairs), built ``chunk_rows(n)`` columns at a time."""
    n = x.size
    out = np.empty((3, len(weights), n))
    step = chunk_rows(n)
    for start in range(0, n, step):
        cols = slice(start, start + step)
        sx, sy = np.sign(x[:, None] - x[None, cols]), np.sign(y[:, None] - y[None, cols])
        for k, matrix in enumerate((sx * sy, np.abs(sx), np.abs(sy))):
            out[k, :, cols] = weights @ matrix
    return out


def _tau_b(sums: np.ndarray) -> np.ndarray:
    """tau-b from ``(3, b)`` pair sums: ``(C - D) / sqrt((n0 - n1)(n0 - n2))``, where the
    untied-pair counts ``n0 - n1``, ``n0 - n2`` are zero (a constant side) giving NaN."""
    concordance, untied_x, untied_y = sums
    scale = np.sqrt(untied_x * untied_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = concordance / scale
    return np.where(scale > 0, np.clip(tau, -1.0, 1.0), math.nan)


def kendall_of_resamples(x: np.ndarray, y: np.ndarray) -> IndexStatistic:
    """``fn(indices (b, n)) ->`` Kendall's tau-b of every resample. With ``w`` how often each
    item is drawn, ``C - D = w' M w / 2`` and the untied counts are ``w' |S| w / 2`` (a drawn
    item's copies tie in both); O(n^2) per resample."""

    def statistic(indices: np.ndarray) -> np.ndarray:
        weights = counts(indices, x.size)
        return _tau_b((_pair_products(weights, x, y) * weights).sum(axis=2))

    return statistic


def kendall_leave_one_out(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """tau-b without item ``i``, for every ``i``: each pair sum loses twice item ``i``'s row."""
    rows = _pair_products(np.ones((1, x.size)), x, y)[:, 0]
    return _tau_b(rows.sum(axis=1, keepdims=True) - 2 * rows)


def _correlation(name: str, metric: ArrayLike, human: ArrayLike, settings: BootstrapSettings,
                 make: Callable[[np.ndarray, np.ndarray], IndexStatistic],
                 jackknife: Callable[[np.ndarray, np.ndarray], np.ndarray] | None) -> Agreement:
    x, y = paired_values(metric, human)
    if x.size < 3:
        return _undefined(name, x.size, f"{x.size} complete pairs (need 3)", settings)
    interval = bootstrap_indices(x.size, make(x, y), settings,
                                 (lambda: jackknife(x, y)) if jackknife else None)
    return _agreement(name, interval, x.size, settings,
                      undefined_reason="the metric or the human rating is constant")


def spearman(metric: ArrayLike, human: ArrayLike,
             settings: BootstrapSettings = DEFAULT_SETTINGS) -> Agreement:
    """Spearman's rho between a per-item metric and the human rating, with its bootstrap CI.

    ``rho = pearson(rank(x), rank(y))`` with mid-ranks for ties (``scipy.stats.spearmanr``).
    NaN pairs dropped; fewer than 3 pairs or a constant side: NaN. BCa's jackknife is the
    brute-force leave-one-out (O(n^2 log n)).
    """
    return _correlation("spearman", metric, human, settings, spearman_of_resamples, None)


def kendall(metric: ArrayLike, human: ArrayLike,
            settings: BootstrapSettings = DEFAULT_SETTINGS) -> Agreement:
    """Kendall's tau-b between a per-item metric and the human rating, with its bootstrap CI.

    ``tau_b = (C - D) / sqrt((n0 - n1)(n0 - n2))``: concordant minus discordant pairs over the
    geometric mean of the pairs untied in each variable (``scipy.stats.kendalltau``). NaN pairs
    dropped; fewer than 3 pairs or a constant side: NaN. O(n^2) time per resample.
    """
    return _correlation("kendall_tau_b", metric, human, settings, kendall_of_resamples,
                        kendall_leave_one_out)


# ---- metric vs human verdict: AUROC -----------------------------------------------------------


def _floats(values: LabelsLike) -> np.ndarray:
    """1-D float64 values; None / pandas NA become NaN, booleans 0/1."""
    return np.array(_labels(values).tolist(), dtype=np.float64)


def auroc(metric: ArrayLike, verdict: LabelsLike, higher_is_better: bool = True,
          settings: BootstrapSettings = DEFAULT_SETTINGS) -> Agreement:
    """AUROC of ``metric`` at predicting the human ``verdict`` (True / 1 = correct).

    ``AUROC = U / (n_pos * n_neg)`` with ``U = sum over (correct, incorrect) pairs of
    [s_pos > s_neg] + [s_pos == s_neg] / 2`` (Mann-Whitney; ``roc_auc_score``). The metric is
    negated when lower is better. Pairs missing either side dropped; one class only: NaN.
    Resamples holding a single class are dropped from the interval (not stratified).
    """
    score, label = paired_values(metric, _floats(verdict))
    if not np.isin(label, (0.0, 1.0)).all():
        raise ValueError("AUROC: verdicts must be True/False (or 1/0)")
    if label.size == 0 or label.min() == label.max():
        return _undefined("auroc", label.size, "the human verdicts hold one class only",
                          settings)
    interval = bootstrap_auroc(score if higher_is_better else -score, label, settings)
    return _agreement("auroc", interval, label.size, settings)


# ---- two raters: Cohen's kappa ----------------------------------------------------------------


def _labels(values: LabelsLike) -> np.ndarray:
    """1-D object array of labels; None / NaN / pandas NA become None."""
    array = np.asarray(values, dtype=object)
    out = np.empty(array.size, dtype=object)
    out[:] = [None if pd.isna(v) else v for v in array.ravel()]
    return out.reshape(array.shape)


def kappa_weights(k: int, weights: KappaWeights) -> np.ndarray:
    """Disagreement weights over label positions: ``[i != j]``, ``|i - j|`` or ``(i - j)^2``."""
    distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(np.float64)
    if weights is None:
        return (distance > 0).astype(np.float64)
    if weights in ("linear", "quadratic"):
        return distance if weights == "linear" else distance**2
    raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")


def kappa_statistic(disagreement: np.ndarray) -> SumsStatistic:
    """``fn(confusion counts (b, k*k)) -> kappa = 1 - sum(w O) / sum(w E)`` with
    ``E = rows x columns / N`` (sklearn's formula); NaN where ``sum(w E) == 0``."""
    k = len(disagreement)

    def statistic(sums: np.ndarray) -> np.ndarray:
        observed = sums.reshape(len(sums), k, k)
        total = observed.sum(axis=(1, 2))[:, None, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None] / total
            chance = (expected * disagreement).sum(axis=(1, 2))
            kappa = 1 - (observed * disagreement).sum(axis=(1, 2)) / chance
        return np.where(chance > 0, kappa, math.nan)

    return statistic


def _codes(values: np.ndarray, labels: Sequence[Any]) -> np.ndarray:
    position = {label: i for i, label in enumerate(labels)}
    unknown = {v for v in values if v not in position}
    if unknown:
        raise ValueError(f"labels {sorted(map(str, unknown))} are not in labels")
    return np.array([position[v] for v in values], dtype=np.int64)


def cohen_kappa(rater_a: LabelsLike, rater_b: LabelsLike, weights: KappaWeights = None,
                settings: BootstrapSettings = DEFAULT_SETTINGS,
                labels: Sequence[Any] | None = None) -> Agreement:
    """Cohen's kappa of two raters on the same items (labels: strings or ints), with its CI.

    ``kappa = 1 - sum(w * O) / sum(w * E)``: ``O`` the confusion counts, ``E`` the product of
    the raters' marginals over ``N``, ``w`` the disagreement weights over label positions in
    ``labels`` (default: the sorted labels used), as ``sklearn.metrics.cohen_kappa_score``.
    Items missing either label dropped; no expected disagreement (one label only): NaN.
    """
    a, b = _labels(rater_a), _labels(rater_b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"ratings must be 1-D and aligned, got {a.shape} and {b.shape}")
    keep = np.array([u is not None and v is not None for u, v in zip(a, b, strict=True)], bool)
    a, b = a[keep], b[keep]
    name = "cohen_kappa" + (f"_{weights}" if weights else "")
    if a.size == 0:
        return _undefined(name, 0, "no item labelled by both raters", settings, 2)
    labels = sorted(set(a) | set(b)) if labels is None else list(labels)
    k, n = len(labels), a.size
    cells = _codes(a, labels) * k + _codes(b, labels)
    stats = sparse.csr_array((np.ones(n), (np.arange(n), cells)), shape=(n, k * k))
    interval = bootstrap_corpus(stats, kappa_statistic(kappa_weights(k, weights)), settings)
    return _agreement(name, interval, n, settings, 2,
                      "no expected disagreement (both raters used one and the same label)")


# ---- any number of raters: Krippendorff's alpha -----------------------------------------------


def value_counts(data: np.ndarray) -> np.ndarray:
    """``(items, k)``: how many raters gave each item each distinct value (sorted)."""
    rated = ~np.isnan(data)
    domain = np.unique(data[rated])
    code = np.searchsorted(domain, data[rated])
    item = np.broadcast_to(np.arange(data.shape[1]), data.shape)[rated]
    cells = np.bincount(item * domain.size + code, minlength=data.shape[1] * domain.size)
    return cells.reshape(data.shape[1], domain.size).astype(np.float64)


def _alpha(observed: np.ndarray, expected: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``alpha = 1 - D_o / D_e = 1 - (n - 1) sum(o d) / sum(n_c n_k d)``; NaN if ``D_e = 0``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = 1 - (n - 1) * observed / expected
    return np.where(expected > 0, alpha, math.nan)


def nominal_inputs(data: np.ndarray) -> tuple[np.ndarray, SumsStatistic]:
    """Per item ``[sum_{c != k} o_ck, n_u1 .. n_uk]`` (``(m^2 - sum n_uc^2) / (m - 1)`` and the
    value counts); ``sum n_c n_k [c != k] = n^2 - sum n_c^2`` from the summed counts."""
    tally = value_counts(data)
    m = tally.sum(axis=1)
    disagreement = (m**2 - (tally**2).sum(axis=1)) / (m - 1)

    def statistic(sums: np.ndarray) -> np.ndarray:
        margins = sums[:, 1:]
        n = margins.sum(axis=1)
        return _alpha(sums[:, 0], n**2 - (margins**2).sum(axis=1), n)

    return np.column_stack([disagreement, tally]), statistic


def interval_inputs(data: np.ndarray) -> tuple[np.ndarray, SumsStatistic]:
    """Per item ``[sum_{i != j} (v_i - v_j)^2 / (m - 1), m, sum v, sum v^2]`` (values centred on
    their overall mean); ``sum n_c n_k (c - k)^2 = 2 (n sum v^2 - (sum v)^2)``."""
    v = data - np.nanmean(data)
    m = (~np.isnan(v)).sum(axis=0).astype(np.float64)
    spread = np.nansum((v - np.nanmean(v, axis=0)) ** 2, axis=0)
    stats = np.column_stack([2 * m * spread / (m - 1), m, np.nansum(v, axis=0),
                             np.nansum(v**2, axis=0)])

    def statistic(sums: np.ndarray) -> np.ndarray:
        n, total, squares = sums[:, 1], sums[:, 2], sums[:, 3]
        return _alpha(sums[:, 0], 2 * (n * squares - total**2), n)

    return stats, statistic


def ordinal_inputs(data: np.ndarray) -> tuple[np.ndarray, SumsStatistic]:
    """Per item its coincidences ``o_ck = (n_uc n_uk - [c = k] n_uc) / (m - 1)`` (``k * k``
    columns). On the summed matrix, with margins ``n_g``, ``d_ck = (sum_{g=c}^{k} n_g - (n_c +
    n_k) / 2)^2 = (r_k - r_c)^2`` for the mid-ranks ``r_c = cumsum(n)_c - n_c / 2``."""
    tally = value_counts(data)
    items, k = tally.shape
    pairs = tally[:, :, None] * tally[:, None, :] - tally[:, :, None] * np.eye(k)
    stats = (pairs / (tally.sum(axis=1) - 1)[:, None, None]).reshape(items, k * k)

    def statistic(sums: np.ndarray) -> np.ndarray:
        o = sums.reshape(len(sums), k, k)
        margins = o.sum(axis=2)
        ranks = np.cumsum(margins, axis=1) - margins / 2
        distance = (ranks[:, :, None] - ranks[:, None, :]) ** 2
        chance = (margins[:, :, None] * margins[:, None, :] * distance).sum(axis=(1, 2))
        return _alpha((o * distance).sum(axis=(1, 2)), chance, margins.sum(axis=1))

    return stats, statistic


ALPHA_INPUTS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, SumsStatistic]]] = {
    "nominal": nominal_inputs, "ordinal": ordinal_inputs, "interval": interval_inputs}


def krippendorff_alpha(reliability: ArrayLike, level: Level = "nominal",
                       settings: BootstrapSettings = DEFAULT_SETTINGS) -> Agreement:
    """Krippendorff's alpha of a raters x items array (NaN = not rated), with its CI.

    Coincidence matrix ``o_ck = sum_u (n_uc n_uk - [c = k] n_uc) / (m_u - 1)`` over the items
    rated by ``m_u >= 2`` raters (others are unpairable and ignored), margins ``n_c``, ``n`` the
    pairable values: ``alpha = 1 - (n - 1) sum o_ck d_ck / sum n_c n_k d_ck``, with ``d`` the
    nominal ``[c != k]``, interval ``(c - k)^2`` or ordinal mid-rank distance
    (``krippendorff.alpha``). One distinct pairable value (no expected disagreement): NaN.
    """
    data = np.asarray(reliability, dtype=np.float64)
    if data.ndim != 2 or np.isinf(data).any():
        raise ValueError(f"reliability must be a finite 2-D raters x items array, got {data.shape}")
    if level not in ALPHA_INPUTS:
        raise ValueError(f"level must be one of {sorted(ALPHA_INPUTS)}, got {level!r}")
    data = data[:, (~np.isnan(data)).sum(axis=0) >= 2]
    raters, name = int((~np.isnan(data)).any(axis=1).sum()), f"krippendorff_alpha_{level}"
    if data.shape[1] == 0:
        return _undefined(name, 0, "no item rated by two or more raters", settings, raters)
    stats, statistic = ALPHA_INPUTS[level](data)
    interval = bootstrap_corpus(stats, statistic, settings)
    return _agreement(name, interval, data.shape[1], settings, raters,
                      "all pairable ratings are equal (no expected disagreement)")


# ---- long ratings tables ----------------------------------------------------------------------


def _rated_rows(ratings: pd.DataFrame, item_col: str, rater_col: str,
                value_col: str) -> pd.DataFrame:
    """The rows with a value; an (item, rater) pair given twice raises."""
    rows = ratings.loc[ratings[value_col].notna(), [item_col, rater_col, value_col]]
    repeated = rows.duplicated([item_col, rater_col])
    if repeated.any():
        first = rows[repeated].iloc[0]
        raise ValueError(f"rater {first[rater_col]!r} rated item {first[item_col]!r} twice")
    return rows


def _numeric(values: pd.Series) -> pd.Series:
    """Numbers as floats; otherwise each value's position among the sorted distinct values."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers.astype(np.float64)
    return pd.Series(pd.factorize(values.astype(str), sort=True)[0], values.index, np.float64)


def pairwise_matrix(ratings: pd.DataFrame, item_col: str = "review_id",
                    rater_col: str = "reviewer", value_col: str = "value") -> np.ndarray:
    """Raters x items float array (raters and items sorted, NaN = not rated) from a long table,
    for :func:`krippendorff_alpha`. Non-numeric values become their positions among the sorted
    distinct values (meaningful for the nominal level only)."""
    rows = _rated_rows(ratings, item_col, rater_col, value_col)
    rows = rows.assign(**{value_col: _numeric(rows[value_col])})
    table = rows.pivot(index=rater_col, columns=item_col, values=value_col)
    return table.to_numpy(np.float64)


def two_rater_overlap(ratings: pd.DataFrame, item_col: str = "review_id",
                      rater_col: str = "reviewer",
                      value_col: str = "value") -> tuple[np.ndarray, np.ndarray]:
    """The two raters' labels (object arrays, raters in sorted order) on the items both rated,
    by item, for :func:`cohen_kappa`; any other number of raters raises."""
    rows = _rated_rows(ratings, item_col, rater_col, value_col)
    raters = sorted(rows[rater_col].unique())
    if len(raters) != 2:
        raise ValueError(f"two_rater_overlap needs exactly 2 raters, got {len(raters)}")
    table = rows.pivot(index=item_col, columns=rater_col, values=value_col).dropna()
    return (table[raters[0]].to_numpy(dtype=object), table[raters[1]].to_numpy(dtype=object))


def _scale(values: pd.Series) -> list[int] | None:
    """Every integer from the lowest to the highest rating, when all ratings are whole."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any() or (numbers != np.round(numbers)).any() or numbers.empty:
        return None
    return list(range(int(numbers.min()), int(numbers.max()) + 1))


def inter_rater(ratings: pd.DataFrame, field_kind: FieldKind,
                settings: BootstrapSettings = DEFAULT_SETTINGS, *, value_col: str = "value",
                item_col: str = "review_id", rater_col: str = "reviewer") -> dict[str, Any]:
    """Inter-rater agreement of one rating field of a long table (one row per item and rater).

    ``pairable_items``: items with two or more raters; ``raters``; ``cohen_kappa`` when exactly
    two raters (quadratic-weighted over every integer of the rating range for ratings,
    unweighted for choices; else None); ``krippendorff_alpha`` (ordinal for ratings, nominal for
    choices). Agreements as :meth:`Agreement.to_json` dicts.
    """
    if field_kind not in ("rating", "choice"):
        raise ValueError(f"field_kind must be 'rating' or 'choice', got {field_kind!r}")
    rows = _rated_rows(ratings, item_col, rater_col, value_col)
    rating = field_kind == "rating"
    if rating:
        rows = rows.assign(**{value_col: _numeric(rows[value_col])})
    per_item = rows.groupby(item_col)[rater_col].nunique()
    raters = int(rows[rater_col].nunique())
    kappa = None
    if raters == 2:
        a, b = two_rater_overlap(rows, item_col, rater_col, value_col)
        labels = _scale(rows[value_col]) if rating else None
        kappa = cohen_kappa(a, b, "quadratic" if rating else None, settings, labels).to_json()
    alpha = krippendorff_alpha(pairwise_matrix(rows, item_col, rater_col, value_col),
                               "ordinal" if rating else "nominal", settings)
    return {"field_kind": field_kind, "pairable_items": int((per_item >= 2).sum()),
            "raters": raters, "cohen_kappa": kappa, "krippendorff_alpha": alpha.to_json()}
