"""Thin Prefect task wrappers over the plain stage functions: retries, names, logging only."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import EvalConfig
from tasks.data import load_dataset
from tasks.data.base import DatasetRef, save_dataset
from tasks.inference import InferenceRef
from tasks.kinds import Scores, get_task_kind
from tasks.review.sampling import select_for_review, write_review_csv

# Inference has its own fingerprint cache (tasks/inference.py); Prefect's input hashing of
# configs and references would only add overhead.
STAGE = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="load-data", retries=2, retry_delay_seconds=[2, 10], **STAGE)
def load_data(config: EvalConfig, run_dir: Path) -> DatasetRef:
    """Read the dataset, record rejects, write items/rejects tables into the run folder."""
    return save_dataset(load_dataset(config.dataset), run_dir / "data")


@task(name="inference", **STAGE)
def run_inference(dataset: DatasetRef, config: EvalConfig, cache_root: Path) -> InferenceRef:
    """Model outputs for every item, loaded from the fingerprint cache where possible."""
    from tqdm.auto import tqdm

    spec = get_task_kind(config.task.value)
    items = dataset.load_items()
    total = spec.count_inputs(items, config)
    with tqdm(total=total, desc=f"inference ({config.model.kind})", unit="input") as bar:
        ref = spec.infer(dataset, config, cache_root, progress=bar.update)
        if ref.shards_cached:
            bar.set_postfix_str(f"{ref.shards_cached}/{len(ref.shard_folders)} shards cached")
        bar.update(bar.total - bar.n)
    return ref


@task(name="score", **STAGE)
def score(
    dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, run_dir: Path
) -> Scores:
    """Per-sample and corpus metrics from the cached model outputs."""
    spec = get_task_kind(config.task.value)
    return spec.score(dataset, inference, config, run_dir / "scores")


@task(name="sample-review", **STAGE)
def sample_review(scores: Scores, config: EvalConfig, run_dir: Path) -> Path:
    """Seeded review sample (worst + random) as a CSV for human reviewers."""
    import pandas as pd

    table = pd.read_parquet(scores.per_sample_path)
    sample = select_for_review(table, config.review, scores.review_column,
                               scores.review_worst_is_high)
    return write_review_csv(sample, run_dir / "review" / "review_sample.csv")
