"""The team set-up end to end, as a user brings it up: ``bifocal services up`` (S3, Prefect and
MLflow on PostgreSQL, a process worker) → ``prefect deploy --all`` of deployments/prefect.yaml →
the ad-hoc evaluation triggered through the Prefect API with parameters → the worker runs it →
results on the shared MLflow server with artifacts in S3, the report in S3, the Prefect
artifacts; a second nightly-suite trigger while one runs is cancelled (CANCEL_NEW); ``down``
leaves nothing running. The times of each step are printed (pytest -s) for the record."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient

from tests.helpers import write_dataset
from tests.services import PG_HOST, PG_PORT, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PREFECT = Path(sys.executable).parent / "prefect"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tasks.services import Options, ServiceError, down, environment, postgres, up

    options = Options(dir=tmp_path_factory.mktemp("team") / "stack",
                      db_prefix=f"bifocal_it_{uuid.uuid4().hex[:8]}", pg_host=PG_HOST,
                      pg_port=PG_PORT)
    started = time.perf_counter()
    try:
        up(options)
    except (ServiceError, OSError) as error:
        down(options.dir)
        unavailable(f"the services did not come up: {error}")
    times = {"services up": time.perf_counter() - started}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= environment(options.dir) | {"BIFOCAL_REPO": str(ROOT)}
    try:
        yield {"options": options, "env": env, "times": times}
    finally:
        started = time.perf_counter()
        report = down(options.dir)
        times["services down"] = time.perf_counter() - started
        print({k: round(v, 1) for k, v in times.items()})
        postgres.drop_databases(options)
        assert not report.nothing


def api(stack: dict[str, Any], method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(method, stack["env"]["PREFECT_API_URL"] + path, timeout=60,
                                **kwargs)
    response.raise_for_status()
    return response.json() if response.content else None


def trigger(stack: dict[str, Any], name: str, parameters: dict[str, Any]) -> str:
    deployment = api(stack, "GET", f"/deployments/name/{name}")
    run = api(stack, "POST", f"/deployments/{deployment['id']}/create_flow_run",
              json={"parameters": parameters})
    return str(run["id"])


def wait_state(stack: dict[str, Any], run_id: str, states: set[str], timeout: float = 600
               ) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api(stack, "GET", f"/flow_runs/{run_id}")["state"]["type"]
        if state in states:
            return str(state)
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} never reached {states}")


@pytest.fixture(scope="module")
def deployed(stack: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([str(PREFECT), "--no-prompt", "deploy", "--all", "--prefect-file",
                           "deployments/prefect.yaml"], cwd=ROOT, env=stack["env"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stack["times"]["prefect deploy --all"] = time.perf_counter() - started
    return stack


def eval_config(tmp: Path, clip: Path, experiment: str) -> dict[str, Any]:
    return {"task": "retrieval",
            "model": {"kind": "dual_encoder", "path": str(clip), "batch_size": 8,
                      "device": "cpu"},
            "dataset": {"source": "manifest", "path": str(write_dataset(tmp / "ds", n=12))},
            "review": {"size": 4}, "statistics": {"bootstrap": 200},
            "report": {"destination": "s3://bifocal/reports"},
            "tracking": {"experiment": experiment}, "work_dir": str(tmp / "work")}


def test_ad_hoc_evaluation_through_the_worker_lands_in_mlflow_and_s3(deployed, tiny_clip_dir,
                                                                     tmp_path: Path):
    import boto3

    started = time.perf_counter()
    run_id = trigger(deployed, "evaluate/ad-hoc-evaluation",
                     {"config": eval_config(tmp_path, tiny_clip_dir, "team-it")})
    assert wait_state(deployed, run_id, TERMINAL) == "COMPLETED"
    deployed["times"]["trigger -> completed (ad-hoc)"] = time.perf_counter() - started

    env = deployed["env"]
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("team-it")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["prefect.flow_run_id"] == run_id
    assert run.data.params["model.path"] == str(tiny_clip_dir)
    metrics = run.data.metrics
    assert metrics["i2t_recall_at_1_ci_low"] <= metrics["i2t_recall_at_1"] \
        <= metrics["i2t_recall_at_1_ci_high"]
    assert len(run.inputs.dataset_inputs) == 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/report.json" in artifacts

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                      region_name=env["AWS_DEFAULT_REGION"])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bifocal")["Contents"]]
    assert any(k.startswith("mlflow/") and k.endswith("report/report.json") for k in keys)
    assert any(k.startswith("reports/") and k.endswith("/report.html") for k in keys)
    assert any(k.startswith("reports/") and k.endswith("/review/review_sheet.html")
               for k in keys)

    found = api(deployed, "POST", "/artifacts/filter",
                json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    summary = next(a for a in found if a["key"] == "bifocal-evaluation")
    assert f"[{run.info.run_id}](" in summary["data"] and "report.html" in summary["data"]
    assert env["AWS_SECRET_ACCESS_KEY"] not in summary["data"]


def test_a_second_nightly_trigger_while_one_runs_is_cancelled(deployed, tiny_clip_dir,
                                                               tmp_path: Path):
    shared = eval_config(tmp_path, tiny_clip_dir, "team-it-suite")
    suite = {"name": "it-suite",
             "models": [{"name": "tiny", "kind": "dual_encoder", "path": str(tiny_clip_dir),
                         "batch_size": 8, "device": "cpu"}],
             "datasets": [{"name": "ds", "source": "manifest", "path": shared["dataset"]["path"]}],
             "shared": {k: v for k, v in shared.items() if k not in ("model", "dataset")}}
    first = trigger(deployed, "suite/nightly-suite", {"config": suite})
    wait_state(deployed, first, {"RUNNING"} | TERMINAL)
    second = trigger(deployed, "suite/nightly-suite", {"config": suite})
    assert wait_state(deployed, second, TERMINAL, timeout=300) == "CANCELLED"
    assert wait_state(deployed, first, TERMINAL) == "COMPLETED"
