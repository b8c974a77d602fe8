"""The leaderboard: the evaluations side by side, best model per dataset and metric marked."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pandas is imported where a table is built
    import pandas as pd

from tasks.stats.estimates import INTERVAL_SUFFIXES as CI_SUFFIXES
from tasks.stats.estimates import is_interval_key
from tasks.suite.config import split_label

BASE_COLUMNS = ["model", "dataset", "status"]
TAIL_COLUMNS = ["run_name", "mlflow_run_id", "report", "error"]


@dataclass
class Outcome:
    """One evaluation of a suite: ``result`` as returned by the evaluate flow when it ran."""

    label: str
    status: Literal["ok", "failed", "skipped"]
    result: dict[str, Any] | None = None
    error: str | None = None
    mlflow_run_id: str | None = None  # of a failed evaluation's run, when one was started


def default_higher_is_better(metric: str) -> bool:
    return not metric.endswith("_rank")


def metric_directions(results: list[dict[str, Any] | None]) -> dict[str, bool]:
    """``higher_is_better`` from each result's local ``report.json`` (S3 reports are skipped;
    metrics found nowhere fall back to ``default_higher_is_better``)."""
    directions: dict[str, bool] = {}
    for result in results:
        report = (result or {}).get("report")
        if not isinstance(report, str) or "://" in report:
            continue
        try:
            document = json.loads((Path(report) / "report.json").read_text())
        except (OSError, ValueError):
            continue
        found = document.get("higher_is_better") if isinstance(document, dict) else None
        if isinstance(found, dict):
            directions |= {str(key): bool(value) for key, value in found.items()}
    return directions


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def build_leaderboard(outcomes: list[Outcome],
                      higher_is_better: dict[str, bool] | None = None) -> pd.DataFrame:
    """One row per evaluation (model, dataset, status, run id, error) and per metric a value
    column, ``<metric>_ci_low`` / ``_ci_high`` where any result has them, and a boolean
    ``<metric>_best``: the best value among the models evaluated on the same dataset (ties
    all marked; nothing is marked where fewer than two models have a value)."""
    import pandas as pd

    results = [(o, (o.result or {}) if o.status == "ok" else {}) for o in outcomes]
    metrics: dict[str, bool] = {}  # metric -> has a CI
    for _, result in results:
        for key in result.get("metrics") or {}:
            if not is_interval_key(key):
                metrics.setdefault(key, False)
    for _, result in results:
        for key in result.get("metrics") or {}:
            for suffix in CI_SUFFIXES:
                if key.endswith(suffix) and key.removesuffix(suffix) in metrics:
                    metrics[key.removesuffix(suffix)] = True
    columns = list(BASE_COLUMNS)
    for metric, has_ci in metrics.items():
        columns += [metric, *([f"{metric}{s}" for s in CI_SUFFIXES] if has_ci else []),
                    f"{metric}_best"]
    columns += TAIL_COLUMNS
    rows = []
    for outcome, result in results:
        model, dataset = split_label(outcome.label)
        values = result.get("metrics") or {}
        row: dict[str, Any] = {
            "model": model, "dataset": dataset, "status": outcome.status,
            "run_name": result.get("run_name") or outcome.label,
            "mlflow_run_id": result.get("mlflow_run_id") or outcome.mlflow_run_id or "",
            "report": str(result.get("report") or ""), "error": outcome.error or ""}
        for metric, has_ci in metrics.items():
            row[metric] = _number(values.get(metric))
            for suffix in CI_SUFFIXES if has_ci else ():
                row[metric + suffix] = _number(values.get(metric + suffix))
            row[f"{metric}_best"] = False
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    directions = {m: (higher_is_better or {}).get(m, default_higher_is_better(m)) for m in metrics}
    for metric in metrics:
        frame[metric] = frame[metric].astype(float)
        frame[f"{metric}_best"] = frame[f"{metric}_best"].astype(bool)
        scored = frame[frame["status"].eq("ok") & frame[metric].notna()]
        for _, group in scored.groupby("dataset", sort=False):
            if len(group) < 2:
                continue
            best = group[metric].max() if directions[metric] else group[metric].min()
            frame.loc[group.index[group[metric] == best], f"{metric}_best"] = True
    frame.attrs["higher_is_better"] = directions
    return frame


def leaderboard_metrics(frame: pd.DataFrame) -> list[str]:
    return [c.removesuffix("_best") for c in frame.columns
            if c.endswith("_best") and c.removesuffix("_best") in frame.columns]


def leaderboard_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The table as JSON-ready rows (missing values as None)."""
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{str(k): v for k, v in record.items()} for record in records]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def metric_cell(row: dict[str, Any], metric: str, markdown: bool = False) -> str:
    """``0.258 [0.230, 0.290]*``: the value, its bootstrap interval when present, and the best
    value per dataset marked (markdown: the value in bold)."""
    value = row.get(metric)
    if _missing(value):
        return "-"
    best = bool(row.get(f"{metric}_best"))
    text = f"**{value:.3f}**" if best and markdown else f"{value:.3f}"
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if not _missing(low) and not _missing(high):
        text += f" [{low:.3f}, {high:.3f}]"
    return text + "*" if best and not markdown else text


def display_rows(frame: pd.DataFrame, markdown: bool = False) -> list[dict[str, str]]:
    """Text cells: model, dataset, status, one per metric, the MLflow run."""
    metrics = leaderboard_metrics(frame)
    rows = []
    for row in leaderboard_records(frame):
        cells = {"model": str(row["model"]), "dataset": str(row["dataset"]),
                 "status": str(row["status"])}
        cells |= {metric: metric_cell(row, metric, markdown) for metric in metrics}
        cells["MLflow run"] = str(row.get("mlflow_run_id") or "-")
        rows.append(cells)
    return rows


def _legend(frame: pd.DataFrame) -> str:
    directions = frame.attrs.get("higher_is_better") or {}
    lower = [m for m in leaderboard_metrics(frame)
             if not directions.get(m, default_higher_is_better(m))]
    text = "best per dataset (higher is better"
    return text + (f"; lower for {', '.join(lower)})" if lower else ")")


def leaderboard_lines(frame: pd.DataFrame) -> list[str]:
    """An aligned text table, ``*`` marking the best value per dataset and metric."""
    rows = display_rows(frame)
    if not rows:
        return ["(no evaluations)"]
    header = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in header]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(r[h].ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
              for r in rows]
    if leaderboard_metrics(frame):
        intervals = any(c.endswith("_ci_low") for c in frame.columns)
        lines += ["", "* " + _legend(frame)
                  + ("; [low, high]: bootstrap confidence interval" if intervals else "")]
    return lines


def leaderboard_markdown(frame: pd.DataFrame, title: str, link: str = "") -> str:
    """The leaderboard as markdown (best values in bold), with failures listed below."""
    rows = display_rows(frame, markdown=True)
    lines = [f"# Suite · {title}", ""]
    if link:
        lines += [f"MLflow run: {link}", ""]
    if rows:
        header = list(rows[0])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r[h].replace("|", "\\|") for h in header) + " |"
                  for r in rows]
        lines += ["", "**bold**: " + _legend(frame)]
    for record in leaderboard_records(frame):
        if record["status"] != "ok":
            lines.append(f"> **{record['status']}** {record['model']}@{record['dataset']}: "
                         f"{record['error']}")
    return "\n".join(lines)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What ``bifocal suite`` prints: the leaderboard, failures, the suite's MLflow run."""
    import pandas as pd

    frame = pd.DataFrame(result["leaderboard"])
    frame.attrs["higher_is_better"] = result.get("higher_is_better") or {}
    lines = [f"Suite {result['name']}: {len(frame)} evaluations", "", *leaderboard_lines(frame)]
    for failure in result.get("failures", []):
        lines.append(f"failed: {failure['label']}: {failure['error']}")
    for label in result.get("skipped", []):
        lines.append(f"skipped: {label} (fail_fast)")
    lines += [f"report: {result['report_html']}"] if result.get("report_html") else []
    lines += ["", f"MLflow run: {result['mlflow_run_id']} ({result['tracking_uri']})"]
    return lines
