from pathlib import Path

from mlflow import MlflowClient

from tasks.tracking import mlflow_log as ml


def test_params_batched_secrets_masked_long_values_cut(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    run_id = ml.start_run(uri, "exp", "r", {"t": "1"})
    params = {f"p{i}": str(i) for i in range(250)}
    params |= {"storage.aws_secret_access_key": "hunter2", "long": "x" * 7000}
    ml.log_params(uri, run_id, params)
    ml.log_metrics(uri, run_id, {"m": 0.5})
    ml.end_run(uri, run_id)
    run = MlflowClient(uri).get_run(run_id)
    assert len(run.data.params) == 252 and run.data.params["p249"] == "249"
    assert run.data.params["storage.aws_secret_access_key"] == "***"
    assert len(run.data.params["long"]) == 6000
    assert run.data.metrics == {"m": 0.5} and run.info.status == "FINISHED"
    artifact_uri = run.info.artifact_uri
    assert artifact_uri.startswith("file://") and str(tmp_path) in artifact_uri


def test_default_tracking_uri_is_sqlite_in_cwd(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert ml.tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert ml.tracking_uri(None) == "http://127.0.0.1:5000"
    assert ml.tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
