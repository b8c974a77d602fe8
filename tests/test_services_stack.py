"""``bifocal services``: the whole stack (S3, PostgreSQL, Prefect server, MLflow server, worker)
started for real on loopback, checked through its APIs, stopped without leftovers."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import stat
import time
import uuid
from pathlib import Path

import pytest

from flows.services_cli import add_services_parser
from tasks.processes import process_alive, process_started
from tasks.services import (
    BUCKET,
    POOL,
    Options,
    ServiceError,
    down,
    environment,
    postgres,
    specs,
    status,
    up,
)
from tasks.services.procs import free_ports, group_members, listening, spawn, stop_groups
from tasks.services.state import Layout, credentials, read_state
from tests.services import PG_HOST, PG_PORT, unavailable

PROBE = """import json, os
from pathlib import Path

import boto3
from prefect import flow


@flow
def probe(names: list[str]):
    boto3.client("s3").put_object(Bucket="bifocal", Key="probe/ok.txt", Body=b"ok")
    present = {name: bool(os.environ.get(name)) for name in names}
    Path(__file__).with_name("out.json").write_text(json.dumps(
        {"present": present, "repo": os.environ.get("BIFOCAL_REPO")}))
"""
EXPORTS = ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
           "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION")


def run_cli(argv: list[str]) -> int:
    """``bifocal <argv>`` through the services parser alone (flows/cli.py adds the same)."""
    parser = argparse.ArgumentParser(prog="bifocal")
    add_services_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def require_stack_tools() -> None:
    """Skip (fail under CI) without the weed binary or a reachable PostgreSQL."""
    try:
        specs.binary("weed")
    except ServiceError as error:
        unavailable(str(error))
    try:
        postgres.check_server(Options(pg_host=PG_HOST, pg_port=PG_PORT))
    except ServiceError as error:
        unavailable(str(error))


@pytest.fixture
def options(tmp_path: Path):
    """A stack folder of its own and throwaway databases (dropped afterwards)."""
    require_stack_tools()
    chosen = Options(dir=tmp_path / "stack", db_prefix=f"bifocal_test_{uuid.uuid4().hex[:8]}",
                     pg_host=PG_HOST, pg_port=PG_PORT)
    yield chosen
    down(chosen.dir)
    postgres.drop_databases(chosen)


# ------------------------------------------------------------------------------ no services


def test_down_status_env_on_nothing(tmp_path, capsys):
    missing = tmp_path / "never-started"
    report = down(missing)
    assert report.nothing and not missing.exists()
    assert run_cli(["services", "down", "--dir", str(missing)]) == 0
    assert "nothing running" in capsys.readouterr().out
    rows = {row.name: row for row in status(missing)}
    assert not any(rows[name].running for name in ("s3", "prefect", "mlflow", "worker"))
    assert run_cli(["services", "status", "--dir", str(missing)]) == 1
    with pytest.raises(ServiceError, match="no stack is up"):
        environment(missing)
    assert run_cli(["services", "env", "--dir", str(missing)]) == 1
    assert "no stack is up" in capsys.readouterr().err


def test_keys_are_generated_once_into_a_0600_file(tmp_path):
    layout = Layout(tmp_path / "stack")
    layout.create()
    keys = credentials(layout)
    assert stat.S_IMODE(layout.env.stat().st_mode) == 0o600
    assert len(keys["AWS_SECRET_ACCESS_KEY"]) == 40
    layout.env.chmod(0o644)
    assert credentials(layout) == keys  # kept (the S3 data stays readable), mode tightened
    assert stat.S_IMODE(layout.env.stat().st_mode) == 0o600


def test_stop_groups_spares_a_reused_pid_and_stops_whole_groups(tmp_path):
    """A leader recorded with another start time is not ours; a group whose leader has exited
    is still stopped; a group that ignores SIGTERM gets SIGKILL."""
    def start(script: str) -> int:
        return spawn(["sh", "-c", script], os.environ, tmp_path, tmp_path / "p.log").pid

    plain, orphans = start("sleep 60 & sleep 60"), start("sleep 60 & exit 0")
    stubborn = start("trap '' TERM; sleep 60 & sleep 60")
    time.sleep(0.5)
    assert stop_groups([(plain, "1")], timeout=1) == [] and group_members(plain)
    groups = [(pid, process_started(pid)) for pid in (plain, orphans, stubborn)]
    began = time.monotonic()
    assert stop_groups(groups, timeout=1) == []
    assert time.monotonic() - began < 4
    assert not [pid for pid, _ in groups if group_members(pid)]


def test_linked_ports_keep_their_offset():
    ports = free_ports(specs.PORTS, {"prefect": 0}, specs.LINKED_PORTS)
    assert ports["admin_grpc"] == ports["admin"] + 10000
    assert len(set(ports.values())) == len(ports)


def test_invalid_db_prefix_is_refused():
    with pytest.raises(ValueError, match="db_prefix"):
        Options(db_prefix='x"; DROP DATABASE postgres; --')


# ---------------------------------------------------------------------------- real services


@pytest.mark.slow
def test_failed_start_stops_what_it_started_and_masks_secrets(options, monkeypatch, tmp_path):
    """The Prefect server fails at once (after printing the keys): the S3 server started
    before it is stopped, state.json is gone, the error names the service, keys masked."""
    fake = tmp_path / "prefect"
    fake.write_text(f"#!/bin/sh\necho boom; cat {Layout(options.dir).env}; exit 3\n")
    fake.chmod(0o755)
    real = specs.binary
    monkeypatch.setattr(specs, "binary", lambda name: str(fake) if name == "prefect"
                        else real(name))
    with pytest.raises(ServiceError) as caught:
        up(options)
    layout = Layout(options.dir)
    secret = credentials(layout)["AWS_SECRET_ACCESS_KEY"]
    assert caught.value.service == "prefect" and "exited with code 3" in str(caught.value)
    assert "boom" in caught.value.tail and secret not in str(caught.value)
    assert not layout.state.exists()
    ports = json.loads(layout.ports.read_text())
    assert not [name for name in specs.S3_PORTS if listening(ports[name])]


@pytest.mark.e2e
@pytest.mark.slow
def test_stack_up_status_apis_env_down(options, capsys, tmp_path):
    began = time.monotonic()
    report = up(options)
    up_seconds = time.monotonic() - began
    assert not report.already
    layout, state = Layout(options.dir), report.state
    urls = {s.name: s.url for s in state.services}
    try:
        assert all(row.running and row.healthy for row in status(options.dir)), status(
            options.dir)
        check_prefect_on_postgres(options, urls["prefect"])
        check_mlflow_artifacts_in_s3(options, urls["mlflow"])
        check_pool_and_worker(options, urls["prefect"], state.service("worker"))
        check_flow_run_on_the_worker(options, urls["prefect"], tmp_path / "probe")
        check_env_and_secrets(options, capsys)
        again = time.monotonic()
        assert up(options).already and time.monotonic() - again < 5
        assert run_cli(["services", "up", "--dir", str(options.dir)]) == 0
        assert "already up" in capsys.readouterr().out
        assert read_state(layout) == state  # nothing restarted
        kill_worker(options, state.service("worker"))
    finally:
        began = time.monotonic()
        stopped = down(options.dir)
        down_seconds = time.monotonic() - began
    print(f"\nbifocal services: up {up_seconds:.1f} s, down {down_seconds:.1f} s")
    assert stopped.stopped == ("s3", "prefect", "mlflow")
    assert stopped.already_stopped == ("worker",)  # a dead service is no error
    assert not [s.name for s in state.services if group_members(s.pid)]
    assert not [port for s in state.services for port in s.ports if listening(port)]
    assert not layout.state.exists()
    assert down(options.dir).nothing


def kill_worker(options: Options, worker) -> None:
    """A service that died: status says so (exit 1), ``down`` later still works."""
    os.killpg(worker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_alive(worker.pid, worker.started) and time.monotonic() < deadline:
        os.waitpid(worker.pid, os.WNOHANG)
        time.sleep(0.1)
    rows = {row.name: row for row in status(options.dir)}
    assert not rows["worker"].running and rows["mlflow"].healthy
    assert run_cli(["services", "status", "--dir", str(options.dir)]) == 1


def check_prefect_on_postgres(options: Options, url: str) -> None:
    from tasks.services.procs import http_json

    assert http_json(f"{url}/api/health") == (200, True)
    assert {"flow_run", "work_pool", "alembic_version"} <= postgres.tables(options, "prefect")
    assert not list(Layout(options.dir).prefect_home.rglob("*.db"))  # no SQLite


def check_mlflow_artifacts_in_s3(options: Options, url: str) -> None:
    """A run with a metric and an artifact; the artifact is an object in the bucket."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    run = client.create_run(client.create_experiment("stack-test"))
    client.log_metric(run.info.run_id, "score", 0.75)
    artifact = Layout(options.dir).root / "probe.txt"
    artifact.write_text("artifact through the MLflow proxy\n")
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics["score"] == 0.75
    assert {"runs", "metrics"} <= postgres.tables(options, "mlflow")
    keys = [obj["Key"] for obj in s3_client(options).list_objects_v2(
        Bucket=BUCKET, Prefix="mlflow/").get("Contents", [])]
    assert any(key.endswith(f"{run.info.run_id}/artifacts/probe.txt") for key in keys), keys


def s3_client(options: Options):
    import boto3
    from botocore.config import Config

    env = environment(options.dir)
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        config=Config(s3={"addressing_style": "path"}))


def check_pool_and_worker(options: Options, url: str, worker) -> None:
    """The process pool exists and is READY, the worker is ONLINE in it, and its environment
    and working directory are what a flow run needs."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api=f"{url}/api") as client:
        pool = client.read_work_pool(POOL)
        workers = client.read_workers_for_work_pool(POOL)
    assert pool.type == "process" and str(pool.status).upper().endswith("READY")
    assert any(w.name == specs.WORKER_NAME and str(w.status).upper().endswith("ONLINE")
               for w in workers)
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{worker.pid}/environ")
                   .read_text().split("\0") if "=" in item)
    assert environ["BIFOCAL_REPO"] == str(options.repo)
    assert environ["PREFECT_API_URL"] == f"{url}/api"
    assert {name: environ[name] for name in EXPORTS} == environment(options.dir)
    assert Path(f"/proc/{worker.pid}/cwd").resolve() == options.repo.resolve()


def check_flow_run_on_the_worker(options: Options, url: str, folder: Path) -> None:
    """A deployment of the pool runs on the worker with the stack's variables (only their
    presence is recorded) and writes to the bucket with them."""
    from prefect import flow
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    folder.mkdir()
    (folder / "probe.py").write_text(PROBE)
    with temporary_settings({PREFECT_API_URL: f"{url}/api"}):
        flow.from_source(source=str(folder), entrypoint="probe.py:probe").deploy(
            name="probe", work_pool_name=POOL, print_next_steps=False, ignore_warnings=True)
        run = run_deployment("probe/probe", parameters={"names": [*EXPORTS, "BIFOCAL_REPO"]},
                             timeout=120)
    assert run.state is not None and run.state.is_completed(), run.state
    result = json.loads((folder / "out.json").read_text())
    assert all(result["present"].values()) and result["repo"] == str(options.repo)
    assert s3_client(options).get_object(Bucket=BUCKET, Key="probe/ok.txt")["Body"].read() == b"ok"


def check_env_and_secrets(options: Options, capsys) -> None:
    """``env`` prints the exports; the keys are in the 0600 env file and nowhere else."""
    capsys.readouterr()
    assert run_cli(["services", "env", "--dir", str(options.dir)]) == 0
    words = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert all(command == "export" for command, _ in words)
    printed = dict(assignment.split("=", 1) for _, assignment in words)
    assert tuple(printed) == EXPORTS and printed == environment(options.dir)
    layout = Layout(options.dir)
    assert stat.S_IMODE(layout.env.stat().st_mode) == 0o600
    secret = credentials(layout)["AWS_SECRET_ACCESS_KEY"]
    assert secret not in layout.state.read_text()
    leaked = [log.name for log in layout.logs.glob("*.log")
              if secret in log.read_text(errors="replace")]
    assert not leaked
    assert run_cli(["services", "status", "--dir", str(options.dir)]) == 0
    table = capsys.readouterr().out
    assert secret not in table and sum(" up " in line for line in table.splitlines()) == 5
