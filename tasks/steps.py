"""Thin Prefect task wrappers over the plain stage functions: retries, names, logging only.
Retries are for stages whose errors can heal (reading a remote source, writing to S3 or the
tracking server), and only for errors that can heal (``is_transient``): a broken manifest or a
denied request fails at once. Inference and scoring are deterministic and fail once."""

from __future__ import annotations

import errno
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import EvalConfig
from tasks.data import load_dataset
from tasks.data.base import DatasetRef, save_dataset
from tasks.data.digests import DigestCache
from tasks.io import is_s3, write_parquet
from tasks.kinds import InferenceRef, Scores, get_task_kind, kind_code_version
from tasks.kinds.scoring import bootstrap_settings
from tasks.kinds.sharded import Inference
from tasks.report.build import write_report
from tasks.report.figures import run_figures
from tasks.review.export import add_s3_tasks
from tasks.review.prepare import ReviewInputs, ReviewQueue, prepare_review
from tasks.slicing import (
    Slices,
    gaps,
    slice_metrics,
    slice_scores,
    slices_frame,
    to_json,
)
from tasks.tracking import mlflow_log as ml
from tasks.tracking.performance import performance_metrics, performance_tags
from tasks.tracking.run import result_tags
from tasks.tracking.storage import publish_folder

# Inference has its own fingerprint cache (tasks/kinds/sharded.py); Prefect's input hashing of
# configs and references would only add overhead.
STAGE: dict[str, Any] = dict(cache_policy=NO_CACHE, persist_result=False)

# OSError numbers of a network or a busy resource; a missing file or a denied permission is not
TRANSIENT_ERRNOS = frozenset({
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
    errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET,
    errno.EAGAIN, errno.EBUSY,
})
# S3 error codes of throttling and server-side trouble (sent with 503/500 or, by some S3
# servers, with 400)
TRANSIENT_S3_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "TooManyRequestsException", "RequestLimitExceeded", "RequestTimeout",
    "RequestTimeoutException", "InternalError", "ServiceUnavailable", "PriorRequestNotComplete",
})


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` can heal on a retry: a network error or timeout, a throttled or 5xx S3
    or MLflow answer, a busy SQLite store -- also when it is the cause or context of the error
    raised (``DataError("S3 request ... failed")`` while handling a 503). Configuration, data and
    model errors are permanent."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _transient(error: BaseException) -> bool:
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
        return True
    if isinstance(error, sqlite3.OperationalError):
        return "locked" in str(error) or "busy" in str(error)
    if _instance_of(error, "requests.exceptions", "ConnectionError", "Timeout"):
        return True
    if _instance_of(error, "botocore.exceptions", "ConnectionError", "HTTPClientError"):
        return True  # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ...
    if _instance_of(error, "botocore.exceptions", "ClientError"):
        response = getattr(error, "response", None) or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(response.get("Error", {}).get("Code", ""))
        return status >= 500 or status == 429 or code in TRANSIENT_S3_CODES
    if _instance_of(error, "mlflow.exceptions", "RestException"):
        status = error.get_http_status_code()  # type: ignore[attr-defined]
        return status >= 500 or status == 429
    return False


def _instance_of(error: BaseException, module: str, *names: str) -> bool:
    """isinstance against a library's exception classes, without importing the library: an
    error of a library that is not loaded cannot be one of its classes."""
    loaded = sys.modules.get(module)
    classes = tuple(getattr(loaded, name) for name in names if hasattr(loaded, name))
    return bool(classes) and isinstance(error, classes)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only errors that can heal (``is_transient``)."""
    error = getattr(state, "data", None)
    return isinstance(error, BaseException) and is_transient(error)


HEALING = dict(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_transient)


@task(name="demo-assets", retries=1, retry_condition_fn=retry_transient)
def build_demo_assets(root: str | None, demo_config: Any = None) -> Any:
    """Synthetic benchmark + trained demo models; reused when already built."""
    from tasks.demo import ensure_demo_assets

    return ensure_demo_assets(Path(root) if root else None, config=demo_config)


@task(name="load-data", **HEALING, **STAGE)
def load_data(config: EvalConfig, run_dir: Path) -> DatasetRef:
    """Read the dataset, record rejects, write items/rejects tables into the run folder;
    images already checked are looked up in the work folder's digest cache."""
    digests = DigestCache.under(config.work_dir)
    try:
        return save_dataset(load_dataset(config.dataset, digests), run_dir / "data")
    finally:
        digests.close()


@task(name="inference", **STAGE)
def run_inference(dataset: DatasetRef, config: EvalConfig, cache_root: Path) -> InferenceRef:
    """Model outputs for every item, loaded from the fingerprint cache where possible."""
    from tqdm.auto import tqdm

    kind = get_task_kind(config.task.value)
    total = kind.count_inputs(dataset.load_items(), config)
    with tqdm(total=total, desc=f"inference ({config.model.kind})", unit="input") as bar:
        run = Inference(dataset, config, cache_root, kind_code_version(kind), bar.update)
        ref = kind.infer(run)
        ref.performance = run.performance()
        if ref.shards_cached:
            bar.set_postfix_str(f"{ref.shards_cached}/{len(ref.shard_folders)} shards cached")
        bar.update(bar.total - bar.n)
    return ref


@task(name="score", **STAGE)
def score(
    dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, run_dir: Path
) -> Scores:
    """Per-sample and corpus metrics from the cached model outputs."""
    kind = get_task_kind(config.task.value)
    return kind.score(dataset, inference, config, run_dir / "scores")


@task(name="robustness", **STAGE)
def robustness_step(dataset: DatasetRef, inference: InferenceRef, scores: Scores,
                    config: EvalConfig, run_dir: Path, cache_root: Path) -> Any:
    """Every metric again on each corruption x severity and text perturbation, and the
    adversarial attacks (``tasks.robustness.sweep``); one log line per variant."""
    from prefect import get_run_logger

    from tasks.robustness.sweep import run_sweep

    return run_sweep(dataset, inference, scores, config, run_dir, cache_root, get_run_logger())


@task(name="slices", **STAGE)
def slice_metrics_step(dataset: DatasetRef, scores: Scores, config: EvalConfig,
                       run_dir: Path) -> Slices | None:
    """Every metric with its interval per value of the configured metadata columns."""
    if not config.slices.columns:
        return None
    headline = get_task_kind(config.task.value).headline
    results, warnings = slice_scores(
        pd.read_parquet(scores.per_sample_path), dataset.load_items(), scores.estimates,
        headline, config.slices, bootstrap_settings(config))
    path = run_dir / "scores" / "slices.parquet"
    write_parquet(slices_frame(results, headline), path)
    return Slices(str(path), to_json(results), gaps(results), slice_metrics(results, headline),
                  warnings)


@task(name="sample-review", **STAGE)
def sample_review(dataset: DatasetRef, scores: Scores, config: EvalConfig, run_id: str,
                  run_dir: Path) -> ReviewQueue:
    """The review queue (sampled by ``review.strategies``) in every ``review.formats``."""
    kind = get_task_kind(config.task.value)
    inputs = ReviewInputs(pd.read_parquet(scores.per_sample_path), dataset.load_items(),
                          scores.row_key, scores.review_column, scores.review_worst_is_high,
                          scores.higher_is_better, kind.review_texts)
    title = f"{config.task.value}: {Path(config.model.path).name} on {dataset.source_uri}"
    return prepare_review(inputs, config, run_id, run_dir / "review", title)


@task(name="export-report", **HEALING, **STAGE)
def export_report(config: EvalConfig, report: dict[str, Any], dataset: DatasetRef,
                  scores: Scores, slices: Slices | None, review: ReviewQueue, run_dir: Path) -> str:
    """Write report.json / per-sample tables / report.html and publish them to the destination."""
    per_sample = pd.read_parquet(scores.per_sample_path)
    folder = run_dir / "report"
    files = scores.files | ({"slices.parquet": slices.table_path} if slices else {})
    write_report(folder, report, per_sample, scores.extra_tables, Path(review.folder),
                 dataset.load_rejects(), config.report.formats, files)
    name = re.sub(r"[^\w.\-@]+", "_", report["run_name"]) + "-" + report["mlflow_run_id"][:8]
    destination = f"{config.report.destination.rstrip('/')}/{name}"
    if is_s3(destination) and (folder / "review").is_dir():
        add_s3_tasks(folder / "review", f"{destination}/review", config.report.presign_expiry_s)
    return publish_folder(folder, destination)


@task(name="track-results", **HEALING, **STAGE)
def track_results(uri: str, run_id: str, dataset: DatasetRef, inference: InferenceRef,
                  scores: Scores, slices: Slices | None, report_dir: Path,
                  report: dict[str, Any] | None = None) -> None:
    """Metrics, fingerprints, dataset input, per-sample and slice tables, report artifacts and
    the report's plots (``plots/<name>.png``; ``report`` defaults to report_dir's report.json)
    on the run."""
    items = dataset.load_items()
    ml.log_metrics(uri, run_id, scores.metrics | (slices.metrics if slices else {})
                   | performance_metrics(inference.performance))
    if slices is not None:
        ml.log_table(uri, run_id, pd.read_parquet(slices.table_path), "slices.json")
    ml.set_tags(uri, run_id, result_tags(dataset.digest, inference.model_fingerprint,
                                         inference.fingerprint, inference.cache_state)
                | performance_tags(inference.performance))
    ml.log_dataset(uri, run_id, items.drop(columns=["image_path"]),
                   name=Path(dataset.source_uri).name, source=dataset.source_uri,
                   digest=dataset.digest)
    per_sample = pd.read_parquet(scores.per_sample_path).drop(columns=["image_path"])
    ml.log_table(uri, run_id, per_sample, "per_sample.json")
    ml.log_artifacts(uri, run_id, report_dir, artifact_path="report")
    for name, figure in run_figures(report_dir, report, per_sample, scores.files).items():
        ml.log_figure(uri, run_id, figure, f"plots/{name}.png")


@task(name="gate", **STAGE)
def gate_step(config: EvalConfig, uri: str, run_id: str) -> dict[str, Any]:
    """Compare the finished run with the gate's baseline, record the decision on the run
    (gate.json, tag bifocal.gate) and promote on a pass; the caller raises on a fail."""
    from prefect import get_run_logger

    from tasks.gate import run_gate

    result = run_gate(config, uri, run_id)
    logger = get_run_logger()
    (logger.info if result.passed else logger.error)("%s", result.message())
    return result.to_json()
