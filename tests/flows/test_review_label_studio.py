"""The review round trip through a real Label Studio server: an evaluation exports its queue as a
Label Studio project (labeling config + tasks), the project is created through Label Studio's
API with exactly those files, two scripted reviewers (real users) annotate through the API, the
JSON export is ingested with ``bifocal review ingest``, and the agreement figures on MLflow are
checked against scipy / scikit-learn / krippendorff on the submitted answers."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tasks.config_io import build_config
from tasks.review.label_studio import label_studio_result
from tests.helpers import write_dataset
from tests.review_reference import assert_matches, expected_agreement, scripted_ratings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REVIEWERS = ("ann@bifocal.test", "bob@bifocal.test")
DOUBLE_RATED = 8  # the second reviewer rates the first 8 tasks


def evaluate_into(root: Path, clip: Path, tmp: Path, monkeypatch) -> dict:
    from flows.evaluate import evaluate

    # the export's image URLs are relative to Label Studio's document root
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(root))
    config = build_config({
        "model": {"path": str(clip), "batch_size": 8},
        "dataset": {"path": str(write_dataset(root / "bench", n=40))},
        "review": {"size": 20, "seed": 3, "formats": ["label_studio", "csv"]},
        "statistics": {"bootstrap": 200},
        "report": {"destination": str(tmp / "reports")},
        "tracking": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "ls"},
        "work_dir": str(tmp / "work")})
    return evaluate(config) | {"tracking_uri": config.tracking.tracking_uri}


def answers(tasks: list[dict], seed: int) -> pd.DataFrame:
    """The scripted reviewer's answers per task, from the task's own data (its i2t rank)."""
    queue = pd.DataFrame({"review_id": [t["data"]["review_id"] for t in tasks],
                          "score_i2t_rank": [t["data"]["score_i2t_rank"] for t in tasks],
                          "task_id": [t["id"] for t in tasks]})
    return scripted_ratings(queue, seed)


def test_label_studio_round_trip_from_an_evaluation(prefect_harness, label_studio,
                                                    tiny_clip_dir: Path, tmp_path: Path,
                                                    monkeypatch):
    from tasks.config import ReviewConfig

    root = label_studio.document_root
    result = evaluate_into(root, tiny_clip_dir, tmp_path, monkeypatch)
    exported = Path(result["report"]) / "review" / "label_studio"
    admin = label_studio.admin
    project = admin.create_project("bifocal review", (exported / "config.xml").read_text())
    admin.add_local_storage(project["id"], root / "bench")
    admin.import_tasks(project["id"], json.loads((exported / "tasks.json").read_text()))
    tasks = sorted(admin.tasks(project["id"]), key=lambda t: t["id"])
    assert len(tasks) == 20

    image = label_studio.user(REVIEWERS[0]).request("GET", tasks[0]["data"]["image"])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

    schema = ReviewConfig().schema_
    submitted = []
    for index, email in enumerate(REVIEWERS):
        mine = answers(tasks if index == 0 else tasks[:DOUBLE_RATED], seed=11 + index)
        client = label_studio.user(email)
        for row in mine.to_dict(orient="records"):
            client.annotate(row["task_id"], label_studio_result(schema, {
                "relevance": row["relevance"], "verdict": row["verdict"],
                "comment": row["comment"]}))
        submitted.append(mine.assign(reviewer=email))
    export = admin.export(project["id"], tmp_path / "label-studio-export.json", emails=True)

    run_id, uri = result["mlflow_run_id"], result["tracking_uri"]
    out, err = io.StringIO(), io.StringIO()
    from flows.cli import main

    with redirect_stdout(out), redirect_stderr(err):
        code = main(["review", "ingest", run_id, str(export), "--tracking-uri", uri])
    assert code == 0, err.getvalue()
    print(out.getvalue())  # the scripted review's figures, for the record (pytest -s)

    client = MlflowClient(tracking_uri=uri)
    review = client.search_runs([client.get_run(run_id).info.experiment_id],
                                f"tags.bifocal.review_of = '{run_id}'")[0]
    metrics = review.data.metrics
    ratings = pd.concat(submitted)
    rank = ratings.drop_duplicates("review_id").set_index("review_id")["score_i2t_rank"]
    expected = expected_agreement(ratings, rank, "i2t_rank", higher_is_better=False)
    assert_matches(metrics, expected)
    assert metrics["review_items"] == 20 and metrics["review_raters"] == 2
    assert metrics["interrater_items.relevance"] == DOUBLE_RATED
