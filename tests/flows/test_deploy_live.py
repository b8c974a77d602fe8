"""The team's deployments on a real Prefect server: ``prefect deploy --all`` of
deployments/prefect.yaml (and the GPU variants onto Docker / Kubernetes pools made from the
customised templates), read back through the API, the scheduler's runs of the nightly suite,
and a screenshot of the ad-hoc evaluation's Custom run form in headless Chromium.

The server runs on a free loopback port with a temporary PREFECT_HOME (SQLite); anything
Prefect would fetch from the internet goes to a closed loopback proxy port instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.config import EvalConfig
from tests.services import _wait_http, free_port, stop_process_group, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PREFECT = Path(sys.executable).parent / "prefect"
PREFECT_FILE = "deployments/prefect.yaml"
GPU_FILE = "deployments/gpu/prefect-gpu.yaml"
CLOSED_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, requests fail fast


def server_env(home: Path, port: int) -> dict[str, str]:
    """The environment of the server and the CLI: this server only, nothing off the machine."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PREFECT_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                                  "https_proxy"))}
    return env | {
        "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "HTTP_PROXY": CLOSED_PROXY, "HTTPS_PROXY": CLOSED_PROXY,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "BIFOCAL_REPO": str(ROOT), "PYTHONPATH": str(ROOT)}


@contextmanager
def prefect_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``prefect server start`` (UI included) in its own process group; stopped afterwards."""
    if not PREFECT.exists():
        unavailable(f"{PREFECT} is missing")
    port = free_port()
    env = server_env(tmp_path / "prefect-home", port)
    log_path = tmp_path / "prefect-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                _wait_http(f"{url}/api/health", process, timeout=120)
            except RuntimeError as error:
                tail = log_path.read_text(errors="replace")[-3000:]
                unavailable(f"Prefect server did not start: {error}\n{tail}")
            yield url, env
        finally:
            stop_process_group(process)


def prefect(env: dict[str, str], *args: str) -> str:
    """A ``prefect`` command from the repository root; its output, or the test fails."""
    done = subprocess.run([str(PREFECT), "--no-prompt", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def deploy_everything(env: dict[str, str]) -> None:
    """The process pool and prefect.yaml; the GPU pools from their templates and their file."""
    prefect(env, "work-pool", "create", "bifocal", "--type", "process")
    prefect(env, "deploy", "--all", "--prefect-file", PREFECT_FILE)
    pools = yaml.safe_load((ROOT / GPU_FILE).read_text())["definitions"]["work_pools"]
    for name, pool in pools.items():
        prefect(env, "work-pool", "create", name, "--type", pool["type"],
                "--base-job-template", pool["base_job_template"])
    prefect(env, "deploy", "--all", "--prefect-file", GPU_FILE)


def deployments_of(path: str) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in yaml.safe_load((ROOT / path).read_text())
            ["deployments"]}


def read_deployment(client: Any, flow: str, name: str) -> dict[str, Any]:
    response = client.get(f"/deployments/name/{flow}/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def scheduled_runs(client: Any, deployment_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """The scheduler's runs of a deployment, once it has made some."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.post("/flow_runs/filter", json={
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
        runs = list(response.json())
        if runs or time.monotonic() > deadline:
            return runs
        time.sleep(1)


def check_nightly(client: Any) -> None:
    nightly = read_deployment(client, "suite", "nightly-suite")
    [schedule] = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *"
    assert schedule["schedule"]["timezone"] == "UTC" and schedule["active"]
    assert nightly["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert nightly["work_pool_name"] == "bifocal" and not nightly["paused"]
    runs = scheduled_runs(client, nightly["id"])
    assert runs, "the scheduler made no runs of the nightly suite"
    for run in runs:
        start = datetime.fromisoformat(run["expected_start_time"].replace("Z", "+00:00"))
        assert start.utcoffset() == timedelta(0) and (start.hour, start.minute) == (2, 0)


def check_stored_deployments(client: Any) -> dict[str, Any]:
    """Every deployment with the file's parameters (and job variables); the ad-hoc one's
    stored form is the EvalConfig."""
    flows = {"flows/suite.py:suite": "suite", "flows/evaluate.py:evaluate": "evaluate",
             "flows/compare.py:compare": "compare", "flows/review.py:review_ingest":
             "review-ingest"}
    for path in (PREFECT_FILE, GPU_FILE):
        for name, entry in deployments_of(path).items():
            stored = read_deployment(client, flows[entry["entrypoint"]], name)
            assert stored["parameters"] == (entry.get("parameters") or {})
            assert stored["job_variables"] == (entry["work_pool"].get("job_variables") or {})
            assert stored["enforce_parameter_schema"]
    adhoc = read_deployment(client, "evaluate", "ad-hoc-evaluation")
    assert not adhoc["schedules"]
    schema = adhoc["parameter_openapi_schema"]
    assert schema["properties"]["config"]["$ref"] == "#/definitions/EvalConfig"
    assert set(schema["definitions"]["EvalConfig"]["properties"]) == set(EvalConfig.model_fields)
    assert schema["definitions"]["TaskKind"]["enum"][0] == "retrieval"
    return adhoc


def screenshot_custom_run(url: str, deployment_id: str, out: Path) -> str:
    """The Custom run page of a deployment (Prefect 3.8's UI route
    /deployments/deployment/<id>/run) as a PNG; returns the page's text."""
    from tests.browser import chromium_page, record_requests

    with chromium_page(viewport={"width": 1400, "height": 1800}) as page:
        requests = record_requests(page)
        page.goto(f"{url}/deployments/deployment/{deployment_id}/run")
        page.get_by_text("What is evaluated.").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # let the form settle before the picture
        page.screenshot(path=str(out))
        text = str(page.inner_text("body"))
    leaving = [u for u in requests if not u.startswith((url, "data:", "blob:", "about:"))]
    assert leaving == [], f"the UI asked for {leaving}"
    return text


def test_deploy_all_and_read_back(tmp_path):
    with prefect_server(tmp_path) as (url, env):
        deploy_everything(env)
        import httpx

        with httpx.Client(base_url=f"{url}/api", trust_env=False, timeout=30) as client:
            check_nightly(client)
            adhoc = check_stored_deployments(client)
        shot = tmp_path / "custom-run-ad-hoc-evaluation.png"
        text = screenshot_custom_run(url, adhoc["id"], shot)
    for title in ("Parameters", "config", "Task", "Model", "Dataset", "Batch Size", "Dtype"):
        assert title in text, f"{title!r} is not on the Custom run form"
    assert "ad-hoc-evaluation" in text and "retrieval" in text
    assert shot.stat().st_size > 10_000
    if os.environ.get("BIFOCAL_ARTIFACTS"):
        target = Path(os.environ["BIFOCAL_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, target / shot.name)
