"""The evaluation's report document (report.json), the examples shown in the HTML, and the
markdown summary Prefect shows as an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import EvalConfig
from tasks.data.base import DatasetRef
from tasks.kinds import get_task_kind
from tasks.kinds.base import InferenceRef, Scores
from tasks.secrets import redact
from tasks.slicing import Slices
from tasks.stats.estimates import is_interval_key


def build_report(config: EvalConfig, run: dict[str, str], dataset: DatasetRef,
                 inference: InferenceRef, scores: Scores, slices: Slices | None,
                 timings: dict[str, float]) -> dict[str, Any]:
    # report.json is also an MLflow artifact: the config and the run's URIs without secrets
    report = {
        "task": config.task.value, **redact(run), "config": redact(config.model_dump(mode="json")),
        "fingerprints": {"dataset": dataset.digest, "model": inference.model_fingerprint,
                         "inference": inference.fingerprint, "code": inference.code_version},
        "inference_cache": inference.cache_state, "runtime": inference.runtime,
        # rows_in counts raw input rows (several caption rows can make one item):
        # item_rows + rejected_rows == rows_in
        "counts": {"rows_in": dataset.rows_in, "items": dataset.items,
                   "rejected": dataset.rejected, "item_rows": dataset.item_rows,
                   "rejected_rows": dataset.rejected_rows, **scores.counts},
        "metrics": scores.metrics, "higher_is_better": scores.higher_is_better,
        "statistics": config.statistics.model_dump(mode="json"),
        "estimates": {key: estimate.to_json() for key, estimate in scores.estimates.items()},
        "row_key": scores.row_key, "headline": get_task_kind(config.task.value).headline,
        "skipped": scores.skipped, "warnings": scores.warnings, "timings_s": timings,
        "rejects_by_reason": reject_summary(dataset),
    }
    if slices is not None:
        report["slices"] = {"settings": config.slices.model_dump(mode="json"),
                            "results": slices.results, "gaps": slices.gaps}
        report["warnings"] = scores.warnings + slices.warnings
    return report


def metric_rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    """(metric, "value [low, high]") for display; interval keys fold into their metric."""
    rows = []
    for key, value in metrics.items():
        if is_interval_key(key):
            continue
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        text = f"{value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None
                                 and high is not None else "")
        rows.append((key, text))
    return rows


def reject_summary(dataset: DatasetRef) -> dict[str, int]:
    rejects = dataset.load_rejects()
    if rejects.empty:
        return {}
    # reasons carry details after a colon (paths, decoder messages): group on the head
    heads = rejects["scope"] + ": " + rejects["reason"].str.split(":").str[0]
    return {str(k): int(v) for k, v in heads.value_counts().items()}


def examples(per_sample: pd.DataFrame, review_csv: Path, count: int) -> pd.DataFrame:
    """Show the review sample's first rows in the HTML (worst and random examples)."""
    # rows are items, or (image, text) pairs where a kind scores pairs
    key = "pair_id" if "pair_id" in per_sample.columns else "item_id"
    review = pd.read_csv(review_csv, dtype={key: str}) if review_csv.exists() else None
    if review is None or review.empty:
        return per_sample.head(count).assign(review_reason="")
    reasons = review.drop_duplicates(key).set_index(key)["review_reason"]
    chosen = per_sample[per_sample[key].astype(str).isin(reasons.index)].copy()
    chosen["review_reason"] = chosen[key].astype(str).map(reasons)
    order = {"failed": 0, "worst": 1, "random": 2}
    return chosen.sort_values("review_reason", key=lambda s: s.map(order)).head(count)


def summary_markdown(report: dict[str, Any], link: str, report_uri: str) -> str:
    lines = [f"# {report['task']} · {report['run_name']}", "",
             f"MLflow run `{report['mlflow_run_id']}`: {link}", "",
             f"Report: `{report_uri}`", "", "| metric | value [CI] |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in metric_rows(report["metrics"])]
    counts = ", ".join(f"{k}: {v}" for k, v in report["counts"].items())
    lines += ["", f"Counts: {counts}"]
    lines += [f"> **warning:** {w}" for w in report["warnings"]]
    return "\n".join(lines)
