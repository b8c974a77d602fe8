"""The review-ingest flow: completed reviews of an evaluation run's queue → validated ratings,
human metrics, human–automatic and inter-rater agreement, on MLflow as the child run
``review-N`` of the evaluation run (which keeps every round's ratings)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.review.agreement import review_results, scatter_panels, summary_lines
from tasks.review.ingest import check_ratings, read_ratings
from tasks.review.store import ReviewRun, load_review_run, record_review
from tasks.secrets import redact_url
from tasks.tracking import mlflow_log as ml


def log_scatter(uri: str, run: ReviewRun, ratings: pd.DataFrame, document: dict[str, Any],
                child: str) -> None:
    """The human-vs-metric scatter of the first rating field, on the review run and on the
    evaluation run (``plots/review_human_vs_metric.png``)."""
    from tasks.report.plots import human_vs_metric_figure

    field = next((f.name for f in run.schema if f.type == "rating"), None)
    panels = scatter_panels(run, ratings, document, field) if field else []
    if not panels:
        return
    figure = human_vs_metric_figure(panels)
    for run_id in (child, run.run_id):
        ml.log_figure(uri, run_id, figure, "plots/review_human_vs_metric.png")


@flow(name="review-ingest", log_prints=True)
def review_ingest(run_id: str, files: list[str], tracking_uri: str | None = None,
                  reviewer: str | None = None, work_dir: str = ".bifocal/work"
                  ) -> dict[str, Any]:
    """Ingest review files (the sheet's CSV, the queue's CSV/JSONL filled in, Label Studio's
    JSON export) for evaluation run ``run_id``. Every file is checked before anything is
    stored; ``reviewer`` names the rater of rows without one (default: the file's name)."""
    logger = get_run_logger()
    started = time.perf_counter()
    uri = ml.tracking_uri(tracking_uri)
    run = load_review_run(uri, run_id)
    new = [read_ratings(Path(f), run.schema, reviewer) for f in files]
    ratings = pd.concat([run.previous, *new], ignore_index=True)
    check_ratings(ratings, run.queue_ids, run_id)
    metrics, document = review_results(run, ratings)
    folder = Path(work_dir).expanduser().resolve() / "runs" / run_id
    child = record_review(uri, run, ratings, metrics, document, folder)
    log_scatter(uri, run, ratings, document, child)
    text = summary_lines(document)
    create_markdown_artifact("\n".join(["# Review of " + run.run_name, "", *text, "",
                                        f"MLflow run `{child}`: {ml.run_link(uri, child)}"]),
                             key="bifocal-review", description="Human review and agreement")
    logger.info("review run %s: %d new ratings, %d in all (%.1f s)", child,
                sum(len(f) for f in new), len(ratings), time.perf_counter() - started)
    return {"mlflow_run_id": child, "evaluation_run_id": run_id,
            "tracking_uri": redact_url(uri), "new_ratings": sum(len(f) for f in new),
            "ratings": len(ratings), "metrics": metrics, "text": "\n".join(text) + "\n"}
