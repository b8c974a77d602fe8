"""Thin Prefect task wrappers over the plain stage functions: retries, names, logging only.
Retries are for stages whose errors can heal (reading a remote source, writing to S3 or the
tracking server); inference and scoring are deterministic and fail once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import EvalConfig
from tasks.data import load_dataset
from tasks.data.base import DatasetRef, save_dataset
from tasks.kinds import InferenceRef, Scores, get_task_kind, kind_code_version
from tasks.kinds.sharded import Inference
from tasks.report.build import write_report
from tasks.report.summary import examples
from tasks.review.sampling import select_for_review, write_review_csv
from tasks.tracking import mlflow_log as ml
from tasks.tracking.run import result_tags
from tasks.tracking.storage import publish_folder

# Inference has its own fingerprint cache (tasks/kinds/sharded.py); Prefect's input hashing of
# configs and references would only add overhead.
STAGE: dict[str, Any] = dict(cache_policy=NO_CACHE, persist_result=False)
HEALING = dict(retries=2, retry_delay_seconds=[2, 10])


@task(name="load-data", **HEALING, **STAGE)
def load_data(config: EvalConfig, run_dir: Path) -> DatasetRef:
    """Read the dataset, record rejects, write items/rejects tables into the run folder."""
    return save_dataset(load_dataset(config.dataset), run_dir / "data")


@task(name="inference", **STAGE)
def run_inference(dataset: DatasetRef, config: EvalConfig, cache_root: Path) -> InferenceRef:
    """Model outputs for every item, loaded from the fingerprint cache where possible."""
    from tqdm.auto import tqdm

    kind = get_task_kind(config.task.value)
    total = kind.count_inputs(dataset.load_items(), config)
    with tqdm(total=total, desc=f"inference ({config.model.kind})", unit="input") as bar:
        run = Inference(dataset, config, cache_root, kind_code_version(kind), bar.update)
        ref = kind.infer(run)
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


@task(name="sample-review", **STAGE)
def sample_review(scores: Scores, config: EvalConfig, run_dir: Path) -> Path:
    """Seeded review sample (worst + random) as a CSV for human reviewers."""
    table = pd.read_parquet(scores.per_sample_path)
    sample = select_for_review(table, config.review, scores.review_column,
                               scores.review_worst_is_high)
    return write_review_csv(sample, run_dir / "review" / "review_sample.csv")


@task(name="export-report", **HEALING, **STAGE)
def export_report(config: EvalConfig, report: dict[str, Any], dataset: DatasetRef,
                  scores: Scores, review_csv: Path, run_dir: Path) -> str:
    """Write report.json / per-sample tables / report.html and publish them to the destination."""
    per_sample = pd.read_parquet(scores.per_sample_path)
    folder = run_dir / "report"
    write_report(folder, report, per_sample, scores.extra_tables, review_csv,
                 dataset.load_rejects(), config.report.formats,
                 examples(per_sample, review_csv, config.report.examples),
                 list(get_task_kind(config.task.value).display_columns), scores.files)
    name = re.sub(r"[^\w.\-@]+", "_", report["run_name"]) + "-" + report["mlflow_run_id"][:8]
    return publish_folder(folder, f"{config.report.destination.rstrip('/')}/{name}")


@task(name="track-results", **HEALING, **STAGE)
def track_results(uri: str, run_id: str, dataset: DatasetRef, inference: InferenceRef,
                  scores: Scores, report_dir: Path) -> None:
    """Metrics, fingerprints, dataset input, per-sample table and report artifacts on the run."""
    items = dataset.load_items()
    ml.log_metrics(uri, run_id, scores.metrics)
    ml.set_tags(uri, run_id, result_tags(dataset.digest, inference.model_fingerprint,
                                         inference.fingerprint, inference.cache_state))
    ml.log_dataset(uri, run_id, items.drop(columns=["image_path"]),
                   name=Path(dataset.source_uri).name, source=dataset.source_uri,
                   digest=dataset.digest)
    per_sample = pd.read_parquet(scores.per_sample_path).drop(columns=["image_path"])
    ml.log_table(uri, run_id, per_sample, "per_sample.json")
    ml.log_artifacts(uri, run_id, report_dir, artifact_path="report")
