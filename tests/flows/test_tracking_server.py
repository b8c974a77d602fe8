"""The production set-up: an MLflow tracking server with a PostgreSQL backend store and an S3
artifact store, reports on S3 too; all started on loopback by the test."""

import json
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.config_io import build_config
from tests.helpers import write_dataset
from tests.services import mlflow_server, postgres_database

pytestmark = pytest.mark.e2e


def test_evaluate_against_mlflow_server_postgres_and_s3(prefect_harness, s3_server, tmp_path,
                                                        tiny_clip_dir, monkeypatch):
    from flows.evaluate import evaluate

    s3 = s3_server.client()
    artifact_bucket = s3_server.new_bucket("mlflow")
    reports = s3_server.new_bucket("reports")
    env = s3_server.env() | {"MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    manifest = write_dataset(tmp_path / "ds", n=6)
    with postgres_database() as database, \
            mlflow_server(database, f"s3://{artifact_bucket}/artifacts", tmp_path, env) as uri:
        config = build_config({
            "model": {"path": str(tiny_clip_dir)}, "dataset": {"path": str(manifest)},
            "review": {"size": 2},
            "report": {"destination": f"s3://{reports}/nightly"},
            "gate": {"baseline": "models:/server-clip@champion"},
            "promote": {"model_name": "server-clip"},
            "tracking": {"tracking_uri": uri, "experiment": "server-test"},
            "work_dir": str(tmp_path / "work"),
        })
        result = evaluate(config)
        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(result["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["t2i_recall_at_1"] == pytest.approx(
            result["metrics"]["t2i_recall_at_1"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
        assert "report/report.json" in artifacts
        # promotion through the server: the local folder registered by a pointer artifact
        champion = client.get_model_version_by_alias("server-clip", "champion")
        assert champion.source == f"runs:/{run.info.run_id}/model"
        assert champion.tags["bifocal.model_path"] == str(tiny_clip_dir.resolve())
        pointer = client.download_artifacts(run.info.run_id, "model/bifocal-model.json",
                                            str(tmp_path / "pointer"))
        assert json.loads(Path(pointer).read_text())["path"] == str(tiny_clip_dir.resolve())
    assert result["report"].startswith(f"s3://{reports}/nightly/")
    key = result["report"].removeprefix(f"s3://{reports}/") + "/report.json"
    report = json.loads(s3.get_object(Bucket=reports, Key=key)["Body"].read())
    assert report["mlflow_run_id"] == result["mlflow_run_id"]
    stored = s3.list_objects_v2(Bucket=artifact_bucket, Prefix="artifacts/")
    assert any(obj["Key"].endswith("report/report.html") for obj in stored.get("Contents", []))
    # the review queue went to S3 with its images and Label Studio tasks with working links
    prefix = result["report"].removeprefix(f"s3://{reports}/") + "/review/"
    tasks = json.loads(s3.get_object(Bucket=reports, Key=prefix + "label_studio/tasks_s3.json")
                       ["Body"].read())
    assert len(tasks) == 2
    import requests

    image = requests.get(tasks[0]["data"]["image"], timeout=30)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert s3_server.secret_key not in json.dumps(tasks)
    # the Prefect artifact links the run on the tracking server and the report on S3
    markdown = latest_artifact("bifocal-evaluation")
    assert f"[{result['mlflow_run_id']}]({uri}/#/experiments/" in markdown
    links = dict(re.findall(r"\[([\w./]+)\]\((http[^)]+)\)", markdown))
    page = requests.get(links["report.html"], timeout=30)
    assert page.status_code == 200 and result["mlflow_run_id"] in page.text
    assert requests.get(links["review/review_sheet.html"], timeout=30).status_code == 200
    assert s3_server.secret_key not in markdown
    # no secret reaches MLflow params or tags
    values = json.dumps({**run.data.params, **run.data.tags})
    assert s3_server.secret_key not in values


def latest_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1)
    return str(found[0].data)
