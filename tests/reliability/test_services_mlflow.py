"""The MLflow tracking server down mid-run: bounded retries, then the run's results are spooled
under ``work_dir/spool/<run_id>/`` and ``bifocal runs flush`` sends them once it is back; a
flushed run is never left RUNNING and nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from flows.cli import main
from tasks.tracking import mlflow_log as ml
from tasks.tracking import spool
from tasks.tracking.flush import flush
from tests.helpers import write_dataset
from tests.services import free_port, mlflow_server


@pytest.fixture
def quick_retries(monkeypatch):
    """One HTTP retry: a dead server is found in about a second instead of ~7 s."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")


def test_http_retries_are_bounded_unless_set(monkeypatch):
    for name in ml.HTTP_DEFAULTS:  # setenv first, so the teardown restores the original state
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    ml.client("http://127.0.0.1:1")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"  # the user's choice is kept


def test_dead_server_spools_everything_and_flush_sends_it(tmp_path: Path, quick_retries,
                                                          capsys):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "work"
    run_id = ml.start_run(store, "exp", "r", {"t": "1"}, work_dir=work)
    dead = f"http://127.0.0.1:{free_port()}"  # where the later calls go: nobody listens
    report = tmp_path / "report"
    (report / "sub").mkdir(parents=True)
    (report / "report.json").write_text('{"a": 1}')
    (report / "sub" / "x.csv").write_text("a\n1\n")

    started = time.monotonic()
    ml.log_params(dead, run_id, {"model.path": "/m", "storage.secret_key": "hunter2"})
    assert time.monotonic() - started < 15  # bounded retries, then the spool
    ml.log_metrics(dead, run_id, {"r1": 0.25, "r5": 0.75})
    ml.set_tags(dead, run_id, {"bifocal.inference_cache": "miss"})
    ml.log_table(dead, run_id, pd.DataFrame({"id": ["a", "b"], "rank": [1, 3]}),
                 "per_sample.json")
    ml.log_artifacts(dead, run_id, report, "report")
    ml.log_dataset(dead, run_id, pd.DataFrame({"id": ["a"], "captions": [["x", "y"]]}),
                   name="ds", source=str(tmp_path / "d.jsonl"), digest="d" * 64)
    assert ml.run_link(dead, run_id).endswith(f"/#/runs/{run_id}")  # no call to the server
    ml.end_run(dead, run_id, "FINISHED")

    box = spool.for_run(run_id)
    assert box.folder == work / "spool" / run_id
    kinds = [p.name.split("-", 1)[1] for p in box.pending()]
    assert kinds == ["batch", "batch", "batch", "table", "artifacts", "inputs", "end"]
    assert not list((box.folder / "ops").glob(".*"))  # no half-written operation
    assert "hunter2" not in "".join(p.read_text() for p in box.folder.rglob("*.json"))
    notice = ml.spool_notice(run_id)
    assert notice and f"bifocal runs flush --work-dir {work} --tracking-uri {dead}" in notice

    # still down: nothing is lost, the spool stays, exit status 1
    assert main(["runs", "flush", "--work-dir", str(work)]) == 1
    assert "unreachable" in capsys.readouterr().out and box.active()
    assert MlflowClient(store).get_run(run_id).info.status == "RUNNING"

    assert main(["runs", "flush", "--work-dir", str(work), "--tracking-uri", store]) == 0
    assert "7 spooled operation(s) sent" in capsys.readouterr().out
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"model.path": "/m", "storage.secret_key": "***"}
    assert run.data.metrics == {"r1": 0.25, "r5": 0.75}
    assert run.data.tags["bifocal.inference_cache"] == "miss"
    assert run.data.tags[spool.SPOOLED_TAG] == "true"
    artifacts = {a.path for a in client.list_artifacts(run_id, "report")}
    assert artifacts == {"report/report.json", "report/sub"}
    table = json.loads(Path(client.download_artifacts(run_id, "per_sample.json",
                                                      str(tmp_path))).read_text())
    assert table["data"] == [["a", 1], ["b", 3]]
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["ds"]
    assert not box.folder.exists()
    assert main(["runs", "flush", "--work-dir", str(work)]) == 0  # nothing left to send
    assert "nothing spooled" in capsys.readouterr().out


def test_flush_never_leaves_a_run_running(tmp_path: Path, quick_retries):
    """A writer that died before recording the final status: the run ends FAILED. A writer that
    is still alive: its spool waits."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "work"
    dead = f"http://127.0.0.1:{free_port()}"
    died = ml.start_run(store, "exp", "died", {}, work_dir=work)
    ml.log_metrics(dead, died, {"r1": 0.5})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    meta = spool.for_run(died).meta() | {"pid": int(gone.stdout)}
    spool.write_json(spool.for_run(died).folder / spool.META, meta)

    alive = ml.start_run(store, "exp", "alive", {}, work_dir=work)
    ml.log_metrics(dead, alive, {"r1": 0.5})
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as writer:
        try:
            box = spool.for_run(alive)
            spool.write_json(box.folder / spool.META, box.meta() | {"pid": writer.pid})
            results = {r.run_id: r for r in flush(work, store)}
        finally:
            writer.kill()
    assert results[died].status == "flushed" and results[alive].status == "skipped"
    client = MlflowClient(store)
    run = client.get_run(died)
    assert run.info.status == "FAILED" and run.data.metrics == {"r1": 0.5}
    assert "no final status" in run.data.tags["bifocal.error"]
    assert client.get_run(alive).info.status == "RUNNING" and spool.for_run(alive).active()
    results = {r.run_id: r for r in flush(work, store)}  # the writer is gone now
    assert results[alive].status == "flushed"
    assert client.get_run(alive).info.status == "FAILED"


@pytest.mark.e2e
def test_mlflow_server_stops_mid_evaluation_and_flush_completes_the_run(
        prefect_harness, tiny_clip_dir, tmp_path: Path, monkeypatch, capsys):
    import flows.evaluate as evaluate_module

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = str(tmp_path / "mlartifacts")
    work = tmp_path / "work"
    manifest = write_dataset(tmp_path / "ds", n=6)
    with ExitStack() as first:
        uri = first.enter_context(mlflow_server(store, artifacts, tmp_path / "log-1"))
        config = {"model": {"path": str(tiny_clip_dir), "batch_size": 4},
                  "dataset": {"path": str(manifest)}, "review": {"size": 2},
                  "report": {"destination": str(tmp_path / "reports")},
                  "tracking": {"tracking_uri": uri, "experiment": "outage"},
                  "work_dir": str(work)}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
        real_inference = evaluate_module.run_inference

        def inference_after_outage(*args, **kwargs):
            first.close()  # the server goes away after the run started, params logged
            return real_inference(*args, **kwargs)

        monkeypatch.setattr(evaluate_module, "run_inference", inference_after_outage)
        assert main(["run", str(tmp_path / "run.yaml")]) == 0
    out = capsys.readouterr().out
    assert "spooled" in out and f"bifocal runs flush --work-dir {work}" in out
    (box,) = spool.spooled_runs(work)
    run_id = box.run_id
    assert box.final_status() == "FINISHED"
    report_json = next((tmp_path / "reports").glob("*/report.json"))
    local = json.loads(report_json.read_text())  # the report is complete without MLflow
    assert local["mlflow_run_id"] == run_id

    with mlflow_server(store, artifacts, tmp_path / "log-2") as uri:  # same store, new port
        client = MlflowClient(uri)
        assert client.get_run(run_id).info.status == "RUNNING"
        assert main(["runs", "flush", "--work-dir", str(work), "--tracking-uri", uri]) == 0
        assert "run status FINISHED" in capsys.readouterr().out
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        for key, value in local["metrics"].items():
            assert run.data.metrics[key] == pytest.approx(value), key
        assert {"wall_time_s", "time_inference_s", "time_report_s"} <= run.data.metrics.keys()
        assert "resolved.device" in run.data.params  # logged after the outage
        assert run.data.params["model.path"] == str(tiny_clip_dir)  # logged before it
        assert run.data.tags["bifocal.inference_cache"] == "miss"
        assert len(run.data.tags["bifocal.dataset_fingerprint"]) == 64
        assert "report/report.json" in {a.path for a in client.list_artifacts(run_id, "report")}
        assert "per_sample.json" in {a.path for a in client.list_artifacts(run_id)}
        assert len(run.inputs.dataset_inputs) == 1
    assert not box.folder.exists()
