"""How each corpus metric is recomputed from per-item columns: the link between a metric's
value, its bootstrap interval, its value on a slice and its paired comparison between runs.

A metric declares, per corpus key, an ``Estimate``: a statistic name and the per-sample table
columns it reads (plus options, and an optional ``where`` row filter for breakdowns such as
``vqa_accuracy.answer_type.yes_no``). Estimates are JSON (``report.json["estimates"]``), so a
comparison can rebuild every metric from two runs' stored per-sample tables alone.

Statistics (the unit of resampling is always the table's row: an item, or a pair for matching):

* ``mean`` (column): the mean of per-item values (recall hits, accuracy, VQA accuracy,
  CLIPScore, per-image CIDEr-D with the corpus document frequencies held fixed, ROUGE-L);
* ``ratio`` (numerator, denominator): ``sum(num) / sum(den)`` — e.g. text-to-image recall with
  images as the unit (hits among an image's captions / its captions), so the captions of one
  image are never treated as independent;
* ``bleu`` (2N + 2 sufficient-statistic columns; option ``order``): coco-caption's corpus BLEU;
* ``meteor`` (the 24 ``meteor.stat.*`` columns, no options): METEOR 1.5's corpus score, the
  jar's aggregate over the summed per-sample statistics (``tasks.stats.corpus.meteor_statistic``);
* ``confusion`` (label, prediction; options ``classes``, ``measure`` accuracy / precision /
  recall / f1, ``average`` macro / weighted / binary, ``positive``): scikit-learn's values with
  ``zero_division=0``;
* ``auroc`` (score, label) and ``median`` (column): functions of the resampled rows;
* ``pooled_median`` (a list column): the median of all values of the resampled rows' lists
  (text-to-image median rank with images as the unit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.stats.bootstrap import (
    BootstrapSettings,
    Interval,
    bootstrap_corpus,
    bootstrap_indices,
    bootstrap_mean,
)
from tasks.stats.corpus import bleu_statistic, confusion_contributions, meteor_statistic
from tasks.stats.rank import bootstrap_auroc, bootstrap_median
from tasks.stats.resampling import SumsStatistic


@dataclass(frozen=True)
class Estimate:
    statistic: str
    columns: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    where: tuple[str, str] | None = None  # (column, value): only rows where column == value

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Estimate:
        where = data.get("where")
        return cls(data["statistic"], tuple(data["columns"]), dict(data.get("options", {})),
                   (str(where[0]), str(where[1])) if where else None)

    def rows(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows this estimate reads: ``where`` applied, rows missing an input dropped."""
        if self.where is not None:
            column, value = self.where
            table = table[table[column].astype(str) == value]
        return table.dropna(subset=[c for c in self.columns if c in table.columns])


def mean(column: str, where: tuple[str, str] | None = None) -> Estimate:
    return Estimate("mean", (column,), where=where)


# ---- sums statistics ----------------------------------------------------------------------


def ratio_statistic(sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1]


def confusion_statistic(measure: str, average: str, positive: int = 1) -> SumsStatistic:
    """Accuracy, or precision / recall / F1 averaged macro, weighted (by support) or for the
    ``positive`` class, from ``tp | fp | fn`` sums (layout of ``confusion_contributions``)."""

    def statistic(sums: np.ndarray) -> np.ndarray:
        c = sums.shape[1] // 3
        tp, fp, fn = sums[:, :c], sums[:, c : 2 * c], sums[:, 2 * c :]
        if measure == "accuracy":
            return _divide(tp.sum(axis=1), (tp + fp).sum(axis=1))
        denominators = {"precision": tp + fp, "recall": tp + fn, "f1": 2 * tp + fp + fn}
        values = _divide((2 if measure == "f1" else 1) * tp, denominators[measure])
        if average == "binary":
            return values[:, positive]
        if average == "weighted":
            support = tp + fn
            return _divide((values * support).sum(axis=1), support.sum(axis=1))
        return values.mean(axis=1)

    return statistic


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator),
                     where=np.asarray(denominator) > 0)


def sums_input(estimate: Estimate, rows: pd.DataFrame) -> tuple[Any, SumsStatistic]:
    """(per-row sufficient statistics, the function of their sums) of a sums statistic."""
    options = estimate.options
    if estimate.statistic == "ratio":
        return rows[list(estimate.columns)].to_numpy(np.float64), ratio_statistic
    if estimate.statistic == "bleu":
        return rows[list(estimate.columns)].to_numpy(np.float64), \
            bleu_statistic(int(options.get("order", 4)))
    if estimate.statistic == "meteor":
        return rows[list(estimate.columns)].to_numpy(np.float64), meteor_statistic()
    if estimate.statistic == "confusion":
        classes = [str(c) for c in options["classes"]]
        label, predicted = estimate.columns
        stats = confusion_contributions(class_codes(rows[label], classes),
                                        class_codes(rows[predicted], classes), len(classes))
        return stats, confusion_statistic(options.get("measure", "f1"),
                                          options.get("average", "macro"),
                                          int(options.get("positive", 1)))
    raise ValueError(f"{estimate.statistic!r} is not a sums statistic")


SUMS_STATISTICS = {"ratio", "bleu", "meteor", "confusion"}


def class_codes(values: pd.Series, classes: list[str]) -> np.ndarray:
    """Class index of every value; whole floats read as integers (1.0 is class "1")."""
    code = {name: i for i, name in enumerate(classes)}
    if values.dtype.kind == "f":
        values = values.astype(np.int64)
    return values.astype(str).map(code).to_numpy(np.int64)


# ---- index statistics -----------------------------------------------------------------------


def pooled_median_statistic(lists: pd.Series) -> Callable[[np.ndarray], np.ndarray]:
    """``fn(indices (b, n)) ->`` median of all values in the chosen rows' lists."""
    cells = [np.asarray(cell, dtype=np.float64) for cell in lists]

    def statistic(indices: np.ndarray) -> np.ndarray:
        return np.array([np.median(np.concatenate([cells[i] for i in row]))
                         for row in indices])

    return statistic


# ---- evaluation -------------------------------------------------------------------------------


def point_value(estimate: Estimate, table: pd.DataFrame) -> float:
    """The metric's value on these rows (all of them: the corpus value, or a slice's)."""
    rows = estimate.rows(table)
    if rows.empty:
        return float("nan")
    return _interval(estimate, rows, BootstrapSettings(resamples=0)).estimate


def interval(estimate: Estimate, table: pd.DataFrame, settings: BootstrapSettings) -> Interval:
    """Bootstrap interval of the metric over the rows of ``table`` (with ``where`` applied)."""
    return _interval(estimate, estimate.rows(table), settings)


def _interval(estimate: Estimate, rows: pd.DataFrame, settings: BootstrapSettings) -> Interval:
    name, columns = estimate.statistic, list(estimate.columns)
    if name == "mean":
        return bootstrap_mean(rows[columns[0]].to_numpy(np.float64), settings)
    if name in SUMS_STATISTICS:
        stats, statistic = sums_input(estimate, rows)
        return bootstrap_corpus(stats, statistic, settings)
    if name == "auroc":
        return bootstrap_auroc(rows[columns[0]].to_numpy(np.float64),
                               rows[columns[1]].to_numpy(np.float64), settings)
    if name == "median":
        return bootstrap_median(rows[columns[0]].to_numpy(np.float64), settings)
    if name == "pooled_median":
        return bootstrap_indices(len(rows), pooled_median_statistic(rows[columns[0]]), settings)
    raise ValueError(f"unknown statistic {name!r}")


def interval_metrics(table: pd.DataFrame, estimates: dict[str, Estimate],
                     settings: BootstrapSettings) -> dict[str, float]:
    """``<key>_ci_low`` / ``<key>_ci_high`` of every estimate over ``table``'s rows (none when
    resampling is off or the interval is undefined, e.g. fewer than two rows)."""
    out: dict[str, float] = {}
    if settings.resamples == 0:
        return out
    for key, estimate in estimates.items():
        bounds = interval(estimate, table, settings)
        if np.isfinite(bounds.low) and np.isfinite(bounds.high):
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = bounds.low, bounds.high
    return out


INTERVAL_SUFFIXES = ("_ci_low", "_ci_high")


def is_interval_key(key: str) -> bool:
    """Interval bounds (``<metric>_ci_low`` / ``_ci_high``) are not metrics of their own."""
    return key.endswith(INTERVAL_SUFFIXES)
