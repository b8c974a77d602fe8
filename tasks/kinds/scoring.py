"""Per-item tables shared by the kinds' score paths: status/reason columns, metric columns
aligned to all rows, and writing the table where the report picks it up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import EvalConfig
from tasks.io import write_parquet
from tasks.metrics.runner import MetricRun, run_metrics
from tasks.stats.bootstrap import BootstrapSettings
from tasks.stats.estimates import interval_metrics


def score_metrics(task: str, inputs: Any, config: EvalConfig) -> MetricRun:
    """The configured metrics of ``task``; metrics that run a model (CLIPScore, semantic
    similarity) get the run's device and batch size unless their options set them."""
    defaults = {"device": config.model.device, "batch_size": config.model.batch_size}
    return run_metrics(task, config.metrics, inputs, config.metric_options, defaults)


def bootstrap_settings(config: EvalConfig) -> BootstrapSettings:
    statistics = config.statistics
    return BootstrapSettings(statistics.bootstrap, statistics.level, statistics.method,
                             statistics.seed)


def with_intervals(run: MetricRun, table: pd.DataFrame, config: EvalConfig) -> dict[str, float]:
    """The run's metrics plus the bootstrap interval of each, over the table's scored rows;
    metrics whose interval is undefined (fewer than two rows) are named in a warning."""
    scored = table[table["status"] == "scored"] if "status" in table.columns else table
    settings = bootstrap_settings(config)
    intervals = interval_metrics(scored, run.estimates, settings)
    undefined = [k for k in run.estimates if f"{k}_ci_low" not in intervals]
    if undefined and settings.resamples:
        run.warnings.append(f"no confidence interval (fewer than 2 rows) for {undefined}")
    return run.metrics | intervals


def ok_mask(count: int, failures: dict[int, str]) -> np.ndarray:
    """True for rows without a recorded failure."""
    return np.array([row not in failures for row in range(count)], dtype=bool)


def generated_ok(texts: list[str | None], failures: dict[int, str]) -> np.ndarray:
    """Rows with a generated text and no recorded failure."""
    return np.array([t is not None and i not in failures for i, t in enumerate(texts)],
                    dtype=bool)


def status_columns(table: pd.DataFrame, ok: np.ndarray, failures: dict[int, str]
                   ) -> pd.DataFrame:
    """Add ``status`` (scored / failed) and ``reason`` columns to a per-item table."""
    table["status"] = np.where(ok, "scored", "failed")
    table["reason"] = [failures.get(i, "") for i in range(len(table))]
    return table


def metric_columns(table: pd.DataFrame, scored: np.ndarray,
                   per_sample: dict[str, np.ndarray]) -> pd.DataFrame:
    """Every per-sample metric as a column; NaN on rows that were not scored."""
    for name, values in per_sample.items():
        column = np.full(len(table), np.nan)
        column[scored] = values
        table[name] = column
    return table


def per_item_table(items: pd.DataFrame, ok: np.ndarray, failures: dict[int, str],
                   per_sample: dict[str, np.ndarray],
                   predictions: list[str | None] | None = None) -> pd.DataFrame:
    """One row per item: the item's columns, its prediction, status/reason and every per-sample
    metric."""
    table = status_columns(items.drop(columns=["image_sha256"]), ok, failures)
    if predictions is not None:
        table.insert(3, "prediction", [p or "" for p in predictions])
    return metric_columns(table, ok, per_sample)


def write_per_sample(table: pd.DataFrame, out: Path, name: str = "per_sample") -> str:
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(table, out / f"{name}.parquet")
    return str(out / f"{name}.parquet")
