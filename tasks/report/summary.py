"""The evaluation's report document (report.json), the examples shown in the HTML, and the
markdown summary Prefect shows as an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.config import EvalConfig
from tasks.data.base import DatasetRef
from tasks.kinds import get_task_kind
from tasks.kinds.base import InferenceRef, Scores
from tasks.report.links import created_at, prefect_flow_run
from tasks.report.performance import summary_line as performance_line
from tasks.secrets import redact
from tasks.slicing import Slices
from tasks.stats.estimates import is_interval_key

if TYPE_CHECKING:
    from tasks.review.prepare import ReviewQueue


def build_report(config: EvalConfig, run: dict[str, str], dataset: DatasetRef,
                 inference: InferenceRef, scores: Scores, slices: Slices | None,
                 timings: dict[str, float]) -> dict[str, Any]:
    # report.json is also an MLflow artifact: the config and the run's URIs without secrets
    report = {
        "task": config.task.value, **redact(run), "config": redact(config.model_dump(mode="json")),
        "fingerprints": {"dataset": dataset.digest, "model": inference.model_fingerprint,
                         "inference": inference.fingerprint, "code": inference.code_version},
        "inference_cache": inference.cache_state, "runtime": inference.runtime,
        # throughput, latency, load time, memory: not metrics of the model's quality
        "performance": inference.performance,
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
        "created_at": created_at(), "prefect": prefect_flow_run(),
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


def review_summary(review: ReviewQueue) -> dict[str, Any]:
    """report.json's ``review``: the queue's size, strategies and files (relative to the
    report folder)."""
    return {"items": review.size, "strategies": review.strategies, "warnings": review.warnings,
            "files": sorted(f"review/{name}" for name in review.files)}


def summary_markdown(report: dict[str, Any], link: str, report_uri: str,
                     links: dict[str, str] | None = None) -> str:
    """The Prefect artifact: the MLflow run (a link on a tracking server), the report (presigned
    links when it is on S3), metrics with CIs, counts, warnings and the review queue."""
    run = f"[{report['mlflow_run_id']}]({link})" if link.startswith("http") else (
        f"`{report['mlflow_run_id']}`: {link}")
    lines = [f"# {report['task']} · {report['run_name']}", "", f"MLflow run {run}", "",
             f"Report: `{report_uri}`"]
    if links:
        lines += ["", "Links (valid for a limited time): " + " · ".join(
            f"[{name}]({url})" for name, url in links.items())]
    lines += ["", "| metric | value [CI] |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in metric_rows(report["metrics"])]
    counts = ", ".join(f"{k}: {v}" for k, v in report["counts"].items())
    lines += ["", f"Counts: {counts}"]
    performance = performance_line(report)
    lines += ["", performance] if performance else []
    lines += [f"> **warning:** {w}" for w in report["warnings"]]
    review = report.get("review") or {}
    if review.get("items"):
        chosen = ", ".join(f"{k} {v}" for k, v in review["strategies"].items())
        lines += ["", f"Review queue: {review['items']} items ({chosen}) in "
                  f"`{report_uri.rstrip('/')}/review/`: " + ", ".join(
                      f"`{Path(f).name}`" for f in review["files"])]
    return "\n".join(lines)


def artifact_links(report: dict[str, Any]) -> list[str]:
    """The report files worth a link: the HTML and JSON report and the review sheet."""
    review = set((report.get("review") or {}).get("files", []))
    return ["report.html", "report.json"] + [f for f in ("review/review_sheet.html",
                                                         "review/queue.csv") if f in review]
