"""Comparing run B with baseline A: alignment, refusals, the metrics both can rebuild, and
the rows that changed most."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.comparison.constants import (
    CHANGED_ROWS,
    CONTEXT_COLUMNS,
    DEFAULT_ALPHA,
    DEFAULT_PERMUTATIONS,
)
from tasks.comparison.runs import ComparisonError, RunData, label
from tasks.stats.bootstrap import BootstrapSettings
from tasks.stats.compare import MetricComparison, align, compare_tables
from tasks.stats.estimates import Estimate


@dataclass
class PairComparison:
    """Run B (candidate) against run A (baseline), metric by metric."""

    baseline: dict[str, Any]
    candidate: dict[str, Any]
    row_key: str
    rows: dict[str, int]  # baseline_scored, candidate_scored, compared
    same_dataset: bool
    forced: bool
    metrics: list[MetricComparison]
    not_compared: dict[str, str]
    notes: list[str]
    headline: str | None
    changed: dict[str, Any] | None
    alpha: float = DEFAULT_ALPHA

    def metric(self, key: str) -> MetricComparison | None:
        return next((m for m in self.metrics if m.metric == key), None)

    def to_json(self) -> dict[str, Any]:
        metrics = [m.to_json() | {"improved": m.improved, "verdict": verdict(m, self.alpha),
                                  "significant": significant(m, self.alpha)}
                   for m in self.metrics]
        return clean_json({
            "baseline": self.baseline, "candidate": self.candidate, "row_key": self.row_key,
            "rows": self.rows, "same_dataset": self.same_dataset, "forced": self.forced,
            "notes": self.notes, "alpha": self.alpha, "headline": self.headline,
            "metrics": metrics, "not_compared": self.not_compared, "changed_rows": self.changed,
        })


def significant(result: MetricComparison, alpha: float) -> bool:
    return bool(result.p_holm < alpha)  # NaN (untestable) is never significant


def verdict(result: MetricComparison, alpha: float) -> str:
    """↑ significantly better, ↓ significantly worse (Holm-adjusted p < alpha), = otherwise."""
    if not significant(result, alpha) or result.delta == 0:
        return "="
    return "↑" if result.improved else "↓"


def compare_runs(a: RunData, b: RunData, settings: BootstrapSettings,
                 permutations: int = DEFAULT_PERMUTATIONS, force: bool = False,
                 alpha: float = DEFAULT_ALPHA, only: list[str] | None = None
                 ) -> PairComparison:
    """B against A on the rows both scored; refuses different datasets unless ``force``.
    ``only`` restricts the compared metrics (the Holm family) to these keys."""
    key = _check_comparable(a, b)
    table_a, table_b = _keyed(a.table, key), _keyed(b.table, key)
    rows_a, rows_b = align(table_a, table_b, key)
    rows = {"baseline_scored": _scored_count(table_a, key),
            "candidate_scored": _scored_count(table_b, key), "compared": len(rows_a)}
    same = a.dataset_fingerprint is not None and a.dataset_fingerprint == b.dataset_fingerprint
    notes = _row_notes(a, b, rows, same, force)
    estimates, not_compared, estimate_notes = common_estimates(a, b, rows_a, rows_b)
    estimates = _selected(a, b, estimates, not_compared, only)
    directions = b.higher_is_better | a.higher_is_better
    results = compare_tables(rows_a, rows_b, estimates, directions, settings, permutations)
    headline = _headline(a, b, estimates)
    changed = None
    if headline is not None:
        changed = changed_rows(rows_a, rows_b, key, headline, estimates[headline],
                               directions.get(headline, not headline.endswith("_rank")))
    return PairComparison(a.summary(), b.summary(), key, rows, same, not same, results,
                          not_compared, notes + estimate_notes, headline, changed, alpha)


def _check_comparable(a: RunData, b: RunData) -> str:
    """The shared row key of two runs of the same task."""
    if a.task and b.task and a.task != b.task:
        raise ComparisonError(f"{label(a)} is a {a.task} run and {label(b)} a {b.task} run: "
                              "only runs of the same task can be compared")
    if a.row_key != b.row_key:
        raise ComparisonError(f"row keys differ ({a.row_key} vs {b.row_key}): the per-sample "
                              "tables cannot be aligned")
    for run in (a, b):
        if a.row_key not in run.table.columns:
            raise ComparisonError(f"per_sample.parquet of {label(run)} has no {a.row_key!r} "
                                  "column")
    return a.row_key


def _row_notes(a: RunData, b: RunData, rows: dict[str, int], same: bool, force: bool
               ) -> list[str]:
    """Refuses different datasets unless forced; says which rows were compared and why."""
    scored = (f"(baseline scored {rows['baseline_scored']}, candidate "
              f"{rows['candidate_scored']})")
    notes: list[str] = []
    if not same:
        where = (f"dataset fingerprints differ (baseline {_short(a.dataset_fingerprint)}, "
                 f"candidate {_short(b.dataset_fingerprint)})")
        if not force:
            raise ComparisonError(
                f"{label(a)} and {label(b)} were not evaluated on the same dataset: {where}. "
                f"A paired comparison needs the same items; force it (--force) to compare the "
                f"{rows['compared']} rows both runs scored.")
        notes.append(f"{where}; forced: compared only the {rows['compared']} rows scored in "
                     f"both runs {scored}")
    elif rows["compared"] < max(rows["baseline_scored"], rows["candidate_scored"]):
        notes.append(f"rows scored in only one run were left out: compared {rows['compared']} "
                     f"{scored}")
    if rows["compared"] == 0:
        raise ComparisonError(f"no {a.row_key} is scored in both {label(a)} and {label(b)}")
    if a.model_fingerprint and a.model_fingerprint == b.model_fingerprint:
        notes.append("both runs evaluated the same model weights (same model fingerprint)")
    return notes


def _selected(a: RunData, b: RunData, estimates: dict[str, Estimate],
              not_compared: dict[str, str], only: list[str] | None) -> dict[str, Estimate]:
    """The metrics to compare (``only`` of them when given); an error when none is left."""
    if only is not None:
        estimates = {k: v for k, v in estimates.items() if k in only}
        if not estimates:
            reasons = "; ".join(f"{k}: {not_compared.get(k, 'not in both runs')}" for k in only)
            raise ComparisonError(f"none of {', '.join(only)} can be compared ({reasons})")
    if not estimates:
        reasons = "; ".join(f"{k}: {v}" for k, v in not_compared.items()) or "no estimates"
        raise ComparisonError(f"{label(a)} and {label(b)} share no metric that can be "
                              f"recomputed from per-sample rows ({reasons}); report.json needs "
                              "\"estimates\" (re-run the evaluation with this version)")
    return estimates


def _keyed(table: pd.DataFrame, key: str) -> pd.DataFrame:
    return table.assign(**{key: table[key].astype(str)})


def _scored_count(table: pd.DataFrame, key: str) -> int:
    scored = table[table["status"] == "scored"] if "status" in table.columns else table
    return int(scored[key].nunique())


def _short(fingerprint: str | None) -> str:
    return f"{fingerprint[:12]}…" if fingerprint else "unknown"


def _headline(a: RunData, b: RunData, estimates: dict[str, Estimate]) -> str | None:
    for candidate in (a.headline, b.headline):
        if candidate in estimates:
            return candidate
    return next(iter(estimates), None)


def common_estimates(a: RunData, b: RunData, rows_a: pd.DataFrame, rows_b: pd.DataFrame
                     ) -> tuple[dict[str, Estimate], dict[str, str], list[str]]:
    """Estimates both runs have (and can read), the others with the reason, and notes."""
    ours, theirs = a.estimates, b.estimates
    compared: dict[str, Estimate] = {}
    not_compared: dict[str, str] = {}
    notes: list[str] = []
    for key in list(dict.fromkeys([*ours, *theirs])):
        if key not in theirs:
            not_compared[key] = "only the baseline run has it"
            continue
        if key not in ours:
            not_compared[key] = "only the candidate run has it"
            continue
        estimate = reconcile(ours[key], theirs[key])
        if estimate is None:
            not_compared[key] = (f"computed differently ({_describe(ours[key])} vs "
                                 f"{_describe(theirs[key])})")
            continue
        if estimate != ours[key]:
            notes.append(f"{key}: class lists differ between the runs; both are scored over "
                         "the union of their classes")
        needed = list(estimate.columns) + ([estimate.where[0]] if estimate.where else [])
        missing = [c for c in needed if c not in rows_a.columns or c not in rows_b.columns]
        if missing:
            not_compared[key] = f"per-sample column(s) missing: {', '.join(missing)}"
            continue
        compared[key] = estimate
    return compared, not_compared, notes


def reconcile(ours: Estimate, theirs: Estimate) -> Estimate | None:
    """One estimate for both runs: equal ones; confusion estimates over both class lists."""
    if ours == theirs:
        return ours
    if (ours.statistic, ours.columns, ours.where) != (theirs.statistic, theirs.columns,
                                                      theirs.where):
        return None
    if ours.statistic == "confusion":
        rest_a = {k: v for k, v in ours.options.items() if k != "classes"}
        rest_b = {k: v for k, v in theirs.options.items() if k != "classes"}
        if rest_a == rest_b:
            classes = list(dict.fromkeys([*map(str, ours.options.get("classes", [])),
                                          *map(str, theirs.options.get("classes", []))]))
            return Estimate(ours.statistic, ours.columns, rest_a | {"classes": classes},
                            ours.where)
    return None


def _describe(estimate: Estimate) -> str:
    return f"{estimate.statistic}({', '.join(estimate.columns)})"


# ---- rows that changed ----------------------------------------------------------------------


def row_values(estimate: Estimate, rows: pd.DataFrame) -> pd.Series | None:
    """Per-row values of a metric where it has them: the mean's column, correct/incorrect for
    accuracy-like confusion metrics, numerator / denominator of a ratio; None otherwise."""
    columns = list(estimate.columns)
    if estimate.statistic == "mean":
        return pd.to_numeric(rows[columns[0]], errors="coerce").astype(np.float64)
    if estimate.statistic == "confusion":
        truth, predicted = columns
        values = (rows[truth].astype(str) == rows[predicted].astype(str)).astype(np.float64)
        return values.where(rows[truth].notna() & rows[predicted].notna())
    if estimate.statistic == "ratio":
        numerator, denominator = (pd.to_numeric(rows[c], errors="coerce") for c in columns)
        return (numerator / denominator.where(denominator != 0)).astype(np.float64)
    return None


def changed_rows(rows_a: pd.DataFrame, rows_b: pd.DataFrame, key: str, metric: str,
                 estimate: Estimate, higher_is_better: bool, limit: int = CHANGED_ROWS
                 ) -> dict[str, Any]:
    """The rows where B gained or lost most on ``metric``: for hit/miss values the rows that
    flipped, otherwise the largest per-row differences (better = in the metric's direction)."""
    keep = np.ones(len(rows_a), dtype=bool)
    if estimate.where is not None:
        column, value = estimate.where
        keep &= (rows_a[column].astype(str) == value).to_numpy()
    a_values, b_values = row_values(estimate, rows_a), row_values(estimate, rows_b)
    if a_values is None or b_values is None:
        return {"metric": metric, "kind": "none", "gained": [], "lost": [], "gained_total": 0,
                "lost_total": 0, "reason": f"{estimate.statistic} has no per-row values"}
    x, y = a_values.to_numpy(), b_values.to_numpy()
    keep &= ~(np.isnan(x) | np.isnan(y))
    binary = bool(np.isin(np.r_[x[keep], y[keep]], (0.0, 1.0)).all())
    gain = (y - x) if higher_is_better else (x - y)
    gain = np.where(keep, gain, 0.0)
    context = _context_columns(rows_a, key, estimate)

    def listed(mask: np.ndarray, descending: bool) -> list[dict[str, Any]]:
        index = np.flatnonzero(mask)
        order = np.argsort(-gain[index] if descending else gain[index], kind="stable")
        return [_row(rows_a, i, key, x[i], y[i], context) for i in index[order][:limit]]

    gained, lost = keep & (gain > 0), keep & (gain < 0)
    return {"metric": metric, "kind": "flips" if binary else "difference",
            "gained": listed(gained, True), "lost": listed(lost, False),
            "gained_total": int(gained.sum()), "lost_total": int(lost.sum())}


def _context_columns(rows: pd.DataFrame, key: str, estimate: Estimate) -> list[str]:
    skip = {key, "status", "reason", *estimate.columns}
    out = []
    for column in rows.columns:
        if column in skip or not (pd.api.types.is_object_dtype(rows[column])
                                  or pd.api.types.is_string_dtype(rows[column])):
            continue
        if rows[column].map(lambda v: isinstance(v, str) or v is None).all():
            out.append(column)
        if len(out) == CONTEXT_COLUMNS:
            break
    return out


def _row(rows: pd.DataFrame, i: int, key: str, a: float, b: float, context: list[str]
         ) -> dict[str, Any]:
    row: dict[str, Any] = {key: str(rows[key].iloc[i]), "a": float(a), "b": float(b),
                           "delta": float(b - a)}
    for column in context:
        value = rows[column].iloc[i]
        row[column] = None if value is None else str(value)[:80]
    return row


# ---- documents --------------------------------------------------------------------------------


def clean_json(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
