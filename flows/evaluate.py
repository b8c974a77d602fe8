"""The evaluate flow: load data -> inference -> score -> review sample -> report, in MLflow."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact

from tasks.config import EvalConfig, flatten
from tasks.data.base import DataError, DatasetRef
from tasks.inference import InferenceRef
from tasks.kinds import Scores, get_task_kind
from tasks.report.build import write_report
from tasks.steps import STAGE, load_data, run_inference, sample_review, score
from tasks.tracking import mlflow_log as ml
from tasks.tracking.fingerprint import (
    git_commit,
    git_dirty,
    inference_code_version,
    package_versions,
)
from tasks.tracking.storage import publish_folder


def default_run_name(config: EvalConfig) -> str:
    model = Path(config.model.path.rstrip("/")).name or config.model.path
    data = Path(config.dataset.path.rstrip("/")).stem
    return config.tracking.run_name or f"{model}@{data}"


def start_tags(config: EvalConfig) -> dict[str, str]:
    tags = {"bifocal.task": config.task.value, "bifocal.model_path": config.model.path,
            "bifocal.code_version": inference_code_version()}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["bifocal.git_dirty"] = str(git_dirty()).lower()
    tags |= {f"bifocal.version.{k}": v for k, v in package_versions().items()}
    flow_run_id = runtime.flow_run.id
    if flow_run_id:
        tags["prefect.flow_run_id"] = str(flow_run_id)
        tags["prefect.flow_run_name"] = str(runtime.flow_run.name)
    return tags


def result_tags(dataset: DatasetRef, inference: InferenceRef) -> dict[str, str]:
    cache = "hit" if inference.cache_hit else ("partial" if inference.shards_cached else "miss")
    return {"bifocal.dataset_fingerprint": dataset.digest,
            "bifocal.model_fingerprint": inference.model_fingerprint,
            "bifocal.inference_fingerprint": inference.fingerprint,
            "bifocal.inference_cache": cache}


@task(name="export-report", retries=2, retry_delay_seconds=[2, 10], **STAGE)
def export_report(config: EvalConfig, report: dict[str, Any], dataset: DatasetRef,
                  scores: Scores, review_csv: Path, run_dir: Path) -> str:
    """Write report.json / per-sample tables / report.html and publish them to the destination."""
    per_sample = pd.read_parquet(scores.per_sample_path)
    examples = _examples(per_sample, review_csv, config.report.examples)
    folder = run_dir / "report"
    write_report(folder, report, per_sample, scores.extra_tables, review_csv,
                 dataset.load_rejects(), config.report.formats, examples,
                 list(get_task_kind(config.task.value).display_columns), scores.files)
    name = re.sub(r"[^\w.\-@]+", "_", report["run_name"]) + "-" + report["mlflow_run_id"][:8]
    return publish_folder(folder, f"{config.report.destination.rstrip('/')}/{name}")


@task(name="track-results", retries=2, retry_delay_seconds=[2, 10], **STAGE)
def track_results(uri: str, run_id: str, dataset: DatasetRef, scores: Scores,
                  report_dir: Path, tags: dict[str, str]) -> None:
    """Metrics, dataset input, per-sample table and report artifacts on the MLflow run."""
    items = dataset.load_items()
    ml.log_metrics(uri, run_id, scores.metrics)
    ml.set_tags(uri, run_id, tags)
    ml.log_dataset(uri, run_id, items.drop(columns=["image_path"]),
                   name=Path(dataset.source_uri).name, source=dataset.source_uri,
                   digest=dataset.digest)
    per_sample = pd.read_parquet(scores.per_sample_path).drop(columns=["image_path"])
    ml.log_table(uri, run_id, per_sample, "per_sample.json")
    ml.log_artifacts(uri, run_id, report_dir, artifact_path="report")


def _examples(per_sample: pd.DataFrame, review_csv: Path, count: int) -> pd.DataFrame:
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


def _reject_summary(dataset: DatasetRef) -> dict[str, int]:
    rejects = dataset.load_rejects()
    if rejects.empty:
        return {}
    # reasons carry details after a colon (paths, decoder messages): group on the head
    heads = rejects["scope"] + ": " + rejects["reason"].str.split(":").str[0]
    return {str(k): int(v) for k, v in heads.value_counts().items()}


def summary_markdown(report: dict[str, Any], link: str, report_uri: str) -> str:
    lines = [f"# {report['task']} · {report['run_name']}", "",
             f"MLflow run `{report['mlflow_run_id']}`: {link}", "",
             f"Report: `{report_uri}`", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in report["metrics"].items()]
    counts = ", ".join(f"{k}: {v}" for k, v in report["counts"].items())
    lines += ["", f"Counts: {counts}"]
    lines += [f"> **warning:** {w}" for w in report["warnings"]]
    return "\n".join(lines)


class StageTimer:
    """Wall time per stage, for report.json's ``timings_s``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, stage: str, call):
        started = time.perf_counter()
        value = call()
        self.timings[stage] = round(time.perf_counter() - started, 3)
        return value


@contextmanager
def tracked_run(uri: str, config: EvalConfig, run_name: str) -> Iterator[str]:
    """One MLflow run: params logged once here; it ends FINISHED, or FAILED (KILLED on ^C)
    with the error as a tag, never left RUNNING."""
    run_id = ml.start_run(uri, config.tracking.experiment, run_name, start_tags(config))
    ml.log_params(uri, run_id, flatten(config))
    started = time.perf_counter()
    try:
        yield run_id
    except BaseException as error:
        ml.set_tags(uri, run_id, {"bifocal.error": f"{type(error).__name__}: {error}"[:5000]})
        ml.end_run(uri, run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    ml.log_metrics(uri, run_id, {"wall_time_s": time.perf_counter() - started})
    ml.end_run(uri, run_id, "FINISHED")


def build_report(config: EvalConfig, run: dict[str, str], dataset: DatasetRef,
                 inference: InferenceRef, scores: Scores, timings: dict[str, float]) -> dict:
    return {
        "task": config.task.value, **run, "config": config.model_dump(mode="json"),
        "fingerprints": {"dataset": dataset.digest, "model": inference.model_fingerprint,
                         "inference": inference.fingerprint, "code": inference_code_version()},
        "inference_cache": result_tags(dataset, inference)["bifocal.inference_cache"],
        "counts": {"rows_in": dataset.rows_in, "items": dataset.items,
                   "rejected": dataset.rejected, **scores.counts},
        "metrics": scores.metrics, "higher_is_better": scores.higher_is_better,
        "skipped": scores.skipped, "warnings": scores.warnings, "timings_s": timings,
        "rejects_by_reason": _reject_summary(dataset),
    }


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
    cache_root = work / "cache" / "inference"
    inference = timed("inference", lambda: run_inference(dataset, config, cache_root))
    scores = timed("score", lambda: score(dataset, inference, config, run_dir))
    review_csv = timed("review", lambda: sample_review(scores, config, run_dir))
    run = {"run_name": run_name, "mlflow_run_id": run_id, "mlflow_tracking_uri": uri}
    report = build_report(config, run, dataset, inference, scores, timed.timings)
    report_uri = timed("report", lambda: export_report(config, report, dataset, scores,
                                                       review_csv, run_dir))
    timed("tracking", lambda: track_results(uri, run_id, dataset, scores, run_dir / "report",
                                            result_tags(dataset, inference)))
    # report.json is written before its own export is timed: all stages go onto the run
    ml.log_metrics(uri, run_id, {f"time_{stage}_s": t for stage, t in timed.timings.items()})
    create_markdown_artifact(summary_markdown(report, ml.run_link(uri, run_id), report_uri),
                             key="bifocal-evaluation", description="Evaluation summary")
    return {"mlflow_run_id": run_id, "run_name": run_name, "tracking_uri": uri,
            "metrics": scores.metrics, "counts": report["counts"], "report": report_uri,
            "inference_cache": report["inference_cache"], "warnings": scores.warnings}


@flow(name="evaluate", log_prints=True)
def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Evaluate one model on one dataset; one MLflow run; returns metrics and where things are."""
    uri = ml.tracking_uri(config.tracking.tracking_uri)
    run_name = default_run_name(config)
    with tracked_run(uri, config, run_name) as run_id:
        return run_stages(config, uri, run_id, run_name)
