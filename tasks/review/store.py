"""The review's side of MLflow: read an evaluation run's queue (``report/review/``) and the
ratings ingested so far (``review/ratings.parquet``); store a new round as the child run
``review-N`` (human metrics and agreement) and the cumulative ratings on the evaluation run."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import RatingField
from tasks.io import write_parquet
from tasks.review.errors import ReviewFileError
from tasks.tracking import mlflow_log as ml

QUEUE_ARTIFACTS = "report/review"
RATINGS_ARTIFACT = "review/ratings.parquet"
REVIEW_OF_TAG = "bifocal.review_of"
REVIEW_TAG = "bifocal.review"


@dataclass(frozen=True)
class ReviewRun:
    """An evaluation run with its review queue, as the ingest needs it."""

    run_id: str
    run_name: str
    experiment_id: str
    manifest: dict[str, Any]
    sample: pd.DataFrame  # the sampled per-sample rows with review_strategy and metadata
    previous: pd.DataFrame  # ratings of earlier rounds (empty at first)

    @property
    def schema(self) -> list[RatingField]:
        return [RatingField.model_validate(f) for f in self.manifest["schema"]]

    @property
    def queue_ids(self) -> set[str]:
        return set(self.sample[self.manifest["row_key"]].astype(str))


def load_review_run(uri: str, run_id: str) -> ReviewRun:
    """The run's review manifest, sample and earlier ratings; a clear error when the run is
    unknown or has no review queue."""
    client = ml.client(uri)
    try:
        run = client.get_run(run_id)
    except Exception as error:
        raise ReviewFileError(f"run {run_id!r} not found at the tracking server: "
                              f"{str(error).splitlines()[0][:300]}") from None
    with tempfile.TemporaryDirectory(prefix="bifocal-review-") as folder:
        try:
            queue = Path(client.download_artifacts(run_id, QUEUE_ARTIFACTS, folder))
            manifest = json.loads((queue / "review.json").read_text(encoding="utf-8"))
            sample = pd.read_parquet(queue / "sample.parquet")
        except Exception:
            raise ReviewFileError(f"run {run_id} ({run.info.run_name}) has no review queue "
                                  f"({QUEUE_ARTIFACTS}/review.json): was it evaluated with "
                                  "review.size > 0?") from None
        previous = _previous_ratings(client, run_id, folder)
    return ReviewRun(run_id, run.info.run_name or run_id, run.info.experiment_id, manifest,
                     sample, previous)


def _previous_ratings(client: Any, run_id: str, folder: str) -> pd.DataFrame:
    names = {a.path for a in client.list_artifacts(run_id, "review")}
    if RATINGS_ARTIFACT not in names:
        return pd.DataFrame()
    return pd.read_parquet(client.download_artifacts(run_id, RATINGS_ARTIFACT, folder))


def next_round(uri: str, run: ReviewRun) -> int:
    """1 + the number of review rounds already recorded for the run."""
    found = ml.client(uri).search_runs(
        [run.experiment_id], filter_string=f"tags.{REVIEW_OF_TAG} = '{run.run_id}'",
        max_results=1000)
    return len(found) + 1


def record_review(uri: str, run: ReviewRun, ratings: pd.DataFrame, metrics: dict[str, float],
                  document: dict[str, Any], work_dir: Path) -> str:
    """Child run ``review-N`` with the metrics and agreement.json; ratings.parquet (all rounds)
    and agreement.json on the evaluation run; returns the child run id."""
    number = next_round(uri, run)
    folder = work_dir / f"review-{number}"
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet(ratings, folder / "ratings.parquet")
    (folder / "agreement.json").write_text(json.dumps(document, indent=2, default=str),
                                           encoding="utf-8")
    experiment = ml.client(uri).get_experiment(run.experiment_id).name
    tags = {"mlflow.parentRunId": run.run_id, REVIEW_OF_TAG: run.run_id}
    child = ml.start_run(uri, experiment, f"review-{number}", tags)
    ml.log_metrics(uri, child, metrics)
    ml.log_artifacts(uri, child, folder, "review")
    ml.end_run(uri, child, "FINISHED")
    ml.log_artifacts(uri, run.run_id, folder, "review")
    ml.set_tags(uri, run.run_id, {REVIEW_TAG: f"review-{number} ({child})"})
    return child
