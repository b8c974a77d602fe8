"""Slices, the fairness view: every metric with its bootstrap interval for each value of each
metadata column (and each pair of values of two columns, when asked).

Protocol: a slice is the scored rows whose column equals the value; slices smaller than
``min_size`` are listed as too small, never silently dropped. Each metric is recomputed on the
slice from its ``Estimate`` and bootstrapped within the slice. The headline metric (when it is a
mean of per-row values) is also tested slice against the rest: a two-sided permutation test of
the difference of means (rows reassigned between the slice and the rest at random), with Holm's
correction across all tested slices. The gap of a metric is its best slice value minus its worst,
per column.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import SlicesConfig
from tasks.stats.bootstrap import BootstrapSettings
from tasks.stats.estimates import Estimate, interval
from tasks.stats.paired import holm, slice_vs_rest


@dataclass
class Slices:
    """What the slice stage hands on."""

    table_path: str  # parquet: one row per slice and metric
    results: list[dict[str, Any]]
    gaps: dict[str, dict[str, float]]
    metrics: dict[str, float]  # slice.<column>.<value>.<headline>, for the MLflow run
    warnings: list[str]


@dataclass
class SliceResult:
    slice: str  # "background=white" or "background=white & size=small"
    columns: str
    size: int
    status: str  # scored / too small
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> value, CI
    headline_vs_rest: dict[str, float] = field(default_factory=dict)  # delta, p, p_holm


def slice_masks(table: pd.DataFrame, config: SlicesConfig) -> list[tuple[str, str, np.ndarray]]:
    """(slice name, its column(s), row mask) for every value (pair of values) present."""
    groups = []
    for column in config.columns:
        for value in _values(table[column]):
            groups.append((f"{column}={value}", column, _equals(table, column, value)))
    if config.combinations:
        for first, second in itertools.combinations(config.columns, 2):
            for a, b in itertools.product(_values(table[first]), _values(table[second])):
                mask = _equals(table, first, a) & _equals(table, second, b)
                if mask.any():
                    groups.append((f"{first}={a} & {second}={b}", f"{first},{second}", mask))
    return groups


def _values(column: pd.Series) -> list[str]:
    return sorted({str(v) for v in column.dropna()})


def _equals(table: pd.DataFrame, column: str, value: str) -> np.ndarray:
    return (table[column].astype(str) == value).to_numpy() & table[column].notna().to_numpy()


def slice_results(table: pd.DataFrame, estimates: dict[str, Estimate], headline: str,
                  config: SlicesConfig, settings: BootstrapSettings) -> list[SliceResult]:
    """Every slice of the scored rows of ``table`` (metadata columns included)."""
    results = []
    for name, columns, mask in slice_masks(table, config):
        result = SliceResult(name, columns, int(mask.sum()), "scored")
        if result.size < config.min_size:
            result.status = "too small"
        else:
            result.metrics = _metrics(table[mask], estimates, settings)
            result.headline_vs_rest = _versus_rest(table, mask, estimates.get(headline),
                                                   config.permutations, settings.seed)
        results.append(result)
    _adjust(results)
    return results


def _metrics(rows: pd.DataFrame, estimates: dict[str, Estimate],
             settings: BootstrapSettings) -> dict[str, dict[str, float]]:
    out = {}
    for key, estimate in estimates.items():
        bounds = interval(estimate, rows, settings)
        if not math.isnan(bounds.estimate):
            out[key] = {"value": bounds.estimate, "ci_low": bounds.low, "ci_high": bounds.high}
    return out


def _versus_rest(table: pd.DataFrame, mask: np.ndarray, estimate: Estimate | None,
                 permutations: int, seed: int) -> dict[str, float]:
    if estimate is None or estimate.statistic != "mean" or estimate.where or not permutations:
        return {}
    values = table[estimate.columns[0]].to_numpy(np.float64)
    defined = ~np.isnan(values)
    if mask[defined].all() or not mask[defined].any():
        return {}
    test = slice_vs_rest(values[defined], mask[defined], permutations, seed)
    return {"delta": float(test.statistic), "p": float(test.pvalue)}


def _adjust(results: list[SliceResult]) -> None:
    tested = [r for r in results if "p" in r.headline_vs_rest]
    for result, adjusted in zip(tested, holm([r.headline_vs_rest["p"] for r in tested]),
                                strict=True):
        result.headline_vs_rest["p_holm"] = float(adjusted)


def gaps(results: list[SliceResult]) -> dict[str, dict[str, float]]:
    """Per column (or column pair) and metric: best minus worst slice value."""
    by_columns: dict[str, dict[str, list[float]]] = {}
    for result in results:
        for key, values in result.metrics.items():
            by_columns.setdefault(result.columns, {}).setdefault(key, []).append(values["value"])
    return {columns: {key: max(v) - min(v) for key, v in metrics.items() if len(v) > 1}
            for columns, metrics in by_columns.items()}


def slices_frame(results: list[SliceResult], headline: str) -> pd.DataFrame:
    """One row per slice and metric (one row per too-small slice), for MLflow's table view;
    the headline metric's rows carry the slice-vs-rest test."""
    rows: list[dict[str, Any]] = []
    for result in results:
        base = {"slice": result.slice, "columns": result.columns, "rows": result.size,
                "status": result.status}
        if not result.metrics:
            rows.append(base | {"metric": "", "value": math.nan})
        for key, values in result.metrics.items():
            test = result.headline_vs_rest if key == headline else {}
            rows.append(base | {"metric": key, **values}
                        | {f"vs_rest_{k}": v for k, v in test.items()})
    return pd.DataFrame(rows)


def slice_metrics(results: list[SliceResult], headline: str) -> dict[str, float]:
    """``slice.<column>.<value>.<headline>`` for the MLflow run (single-column slices)."""
    from tasks.metrics.base import safe_key_part

    out = {}
    for result in results:
        if "&" in result.slice or headline not in result.metrics:
            continue
        column, _, value = result.slice.partition("=")
        key = f"slice.{safe_key_part(column)}.{safe_key_part(value)}.{headline}"
        out[key] = result.metrics[headline]["value"]
    return out


def to_json(results: list[SliceResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def slice_scores(per_sample: pd.DataFrame, items: pd.DataFrame, estimates: dict[str, Estimate],
                 headline: str, config: SlicesConfig, settings: BootstrapSettings
                 ) -> tuple[list[SliceResult], list[str]]:
    """Slices of the scored rows; columns a pair table lacks are joined from its items.
    Returns the slices and warnings (unknown columns)."""
    table = per_sample[per_sample["status"] == "scored"] if "status" in per_sample else per_sample
    missing = [c for c in config.columns if c not in table.columns]
    joinable = [c for c in missing if c in items.columns and "item_id" in table.columns]
    if joinable:
        table = table.merge(items[["item_id", *joinable]], on="item_id", how="left")
    unknown = [c for c in missing if c not in joinable]
    usable = config.model_copy(update={"columns": [c for c in config.columns
                                                   if c not in unknown]})
    warnings = [f"slice column {c!r} is not in the data; not sliced" for c in unknown]
    return slice_results(table, estimates, headline, usable, settings), warnings
