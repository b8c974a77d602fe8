"""The evaluate flow: load data -> inference -> score -> review sample -> report, in MLflow.

The flow run is named after the evaluation (``evaluation_name``: tracking.run_name, else
model@dataset); its log says the MLflow run, the report and the metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.config import EvalConfig
from tasks.data.base import DataError
from tasks.gate import GateFailed
from tasks.kinds import kind_code_version
from tasks.plan import check_config
from tasks.report.summary import (
    artifact_links,
    build_report,
    review_summary,
    summary_markdown,
)
from tasks.review.approval import ApprovalRejected, wait_for_approval
from tasks.robustness import wants_robustness
from tasks.robustness.sweep import attach as attach_robustness
from tasks.secrets import redact_text, redact_url
from tasks.steps import (
    export_report,
    gate_step,
    load_data,
    robustness_step,
    run_inference,
    sample_review,
    score,
    slice_metrics_step,
    track_results,
)
from tasks.tracking import mlflow_log as ml
from tasks.tracking.run import (
    default_run_name,
    end_dead_runs,
    flow_run_ids,
    runtime_params,
    start_tags,
    tracked_run,
)
from tasks.tracking.storage import presigned_links
from tasks.tracking.ui import INTERVAL_SUFFIXES, runs_url, set_task_view, view_name

T = TypeVar("T")


class StageTimer:
    """Wall time per stage, for report.json's ``timings_s``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, stage: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        value = call()
        self.timings[stage] = round(time.perf_counter() - started, 3)
        return value


def run_stages(config: EvalConfig, uri: str, run_id: str, run_name: str) -> dict[str, Any]:
    """data -> inference -> score -> review sample -> report, then results onto the run."""
    logger = get_run_logger()
    work = Path(config.work_dir).expanduser().resolve()
    run_dir = work / "runs" / run_id
    timed = StageTimer()
    dataset = timed("data", lambda: load_data(config, run_dir))
    logger.info("data: %d items, %d rejected of %d rows", dataset.items, dataset.rejected,
                dataset.rows_in)
    if dataset.items == 0:
        ml.log_artifacts(uri, run_id, Path(dataset.rejects_path).parent, "data")
        raise DataError(f"no usable items in {dataset.source_uri}: all {dataset.rows_in} "
                        "rows were rejected (see the run's data/rejects.parquet)")
    inference = timed("inference", lambda: run_inference(dataset, config,
                                                         work / "cache" / "inference"))
    ml.log_params(uri, run_id, runtime_params(inference.runtime))
    scores = timed("score", lambda: score(dataset, inference, config, run_dir))
    slices = timed("slices", lambda: slice_metrics_step(dataset, scores, config, run_dir))
    robust = timed("robustness", lambda: robustness_step(
        dataset, inference, scores, config, run_dir, work / "cache")) \
        if wants_robustness(config) else None
    review = timed("review", lambda: sample_review(dataset, scores, config, run_id, run_dir))
    for warning in review.warnings:
        logger.warning("review: %s", warning)
    run = {"run_name": run_name, "mlflow_run_id": run_id, "mlflow_tracking_uri": uri}
    report = build_report(config, run, dataset, inference, scores, slices, timed.timings)
    report["review"] = review_summary(review)
    scores = attach_robustness(report, scores, robust)
    report_uri = timed("report", lambda: export_report(config, report, dataset, scores,
                                                       slices, review, run_dir))
    timed("tracking", lambda: track_results(uri, run_id, dataset, inference, scores, slices,
                                            run_dir / "report", report))
    if robust is not None:
        ml.log_metrics(uri, run_id, robust.metrics)
    # report.json is written before its own export is timed: all stages go onto the run
    ml.log_metrics(uri, run_id, {f"time_{stage}_s": t for stage, t in timed.timings.items()})
    links = presigned_links(report_uri, artifact_links(report), config.report.presign_expiry_s)
    create_markdown_artifact(summary_markdown(report, ml.run_link(uri, run_id), report_uri,
                                              links),
                             key="bifocal-evaluation", description="Evaluation summary")
    if config.review.approval:
        approve(config, uri, run_id)
    gate = gate_step(config, uri, run_id) if config.gate is not None else None
    # what the CLI prints and Prefect may keep: the tracking URI without credentials
    return {"mlflow_run_id": run_id, "run_name": run_name, "tracking_uri": redact_url(uri),
            "metrics": scores.metrics, "counts": report["counts"], "report": report_uri,
            "inference_cache": report["inference_cache"], "warnings": report["warnings"],
            "review": report["review"], "gate": gate}


def approve(config: EvalConfig, uri: str, run_id: str) -> None:
    """Pause for the reviewer's decision; it goes onto the run, a rejection fails the flow."""
    logger = get_run_logger()
    logger.info("waiting for approval: resume this flow run in the Prefect UI (approve or "
                "reject) within %d s", config.review.approval_timeout_s)
    decision = wait_for_approval(config.review.approval_timeout_s)
    ml.set_tags(uri, run_id, decision.tags())
    if decision.status != "approved":
        raise ApprovalRejected(decision.message())
    logger.info("%s", decision.message())


def evaluation_name() -> str:
    """The flow run's name: the evaluation's run name (tracking.run_name, else model@dataset);
    "evaluate" when the parameters are not a valid config (the flow then says why)."""
    from prefect.runtime import flow_run

    config = flow_run.parameters.get("config")
    try:
        if not isinstance(config, EvalConfig):
            config = EvalConfig.model_validate(config)
        return default_run_name(config)
    except Exception:  # noqa: BLE001 - naming must not be what fails the run
        return "evaluate"


def metrics_line(headline: str, metrics: dict[str, float]) -> str:
    """``i2t_recall_at_1=0.258 [0.21, 0.3], t2i_recall_at_1=...``: the headline first, each
    metric with its interval when there is one."""
    def shown(key: str) -> str:
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        interval = f" [{low:.4g}, {high:.4g}]" if low is not None and high is not None else ""
        return f"{key}={metrics[key]:.4g}{interval}"

    keys = sorted((k for k in metrics if not k.endswith(INTERVAL_SUFFIXES)),
                  key=lambda k: k != headline)  # stable: the headline first, then in order
    return ", ".join(shown(k) for k in keys) or "none"


def task_view(config: EvalConfig, uri: str, run_id: str, headline: str,
              metrics: dict[str, float]) -> str | None:
    """Save the task's runs view on the experiment (``tasks.tracking.ui``) and say where it
    is; None when it could not be saved (it never fails the evaluation)."""
    if ml.spool_notice(run_id):  # the server went away: the results wait in the spool
        return None
    try:
        mlflow_client = ml.client(uri)
        experiment_id = mlflow_client.get_run(run_id).info.experiment_id
        view = set_task_view(mlflow_client, experiment_id, config.task.value, headline,
                             metrics)
    except Exception as error:  # noqa: BLE001 - a view is a convenience
        get_run_logger().debug("runs view not saved: %s", redact_text(str(error))[:300])
        return None
    if view is None:
        return None
    if uri.startswith(("http://", "https://")):
        return runs_url(redact_url(uri) or uri, experiment_id, view)
    return f"Views > {view_name(config.task.value)} above the runs of experiment " \
        f"{config.tracking.experiment!r}"


def log_outcome(config: EvalConfig, uri: str, result: dict[str, Any], headline: str) -> None:
    """The report and the metrics, one INFO line each, and where the task's runs view is."""
    logger = get_run_logger()
    logger.info("report: %s", result["report"])
    logger.info("metrics: %s", metrics_line(headline, result["metrics"]))
    where = task_view(config, uri, result["mlflow_run_id"], headline, result["metrics"])
    if where:
        logger.info("runs of this task with their metrics in MLflow: %s", where)


@flow(name="evaluate", log_prints=True, flow_run_name=evaluation_name)
def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Evaluate one model on one dataset; one MLflow run; returns metrics and where things are."""
    kind = check_config(config)
    uri = ml.tracking_uri(config.tracking.tracking_uri)
    for line in end_dead_runs(uri, config.tracking.experiment):  # runs of killed processes
        get_run_logger().warning("%s", redact_text(line))  # errors may quote the URI
    run_name = default_run_name(config)
    tags = start_tags(config, kind_code_version(kind), flow_run_ids())
    with tracked_run(uri, config, run_name, tags) as run_id:
        get_run_logger().info("MLflow run %s: %s", run_id, ml.run_link(uri, run_id))
        result = run_stages(config, uri, run_id, run_name)
    log_outcome(config, uri, result, kind.headline)
    # a failed gate fails the flow run; the evaluation's MLflow run stays FINISHED
    if result["gate"] is not None and result["gate"]["status"] == "failed":
        raise GateFailed(result["gate"]["message"], result)
    return result
