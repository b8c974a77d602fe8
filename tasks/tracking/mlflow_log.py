"""MLflow logging with explicit ``run_id`` everywhere (Prefect tasks run in threads, and the
fluent API keeps its active run per thread). Calls are batched: over HTTP each costs ~55 ms."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pandas as pd

PARAM_VALUE_LIMIT = 6000
BATCH_LIMIT = 100  # params/tags per log_batch call (MLflow allows 100 params per batch)
SECRET_MARKERS = ("secret", "password", "token", "access_key", "credential", "api_key")


def tracking_uri(configured: str | None) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working dir."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def ensure_experiment(mlflow_client, name: str, uri: str) -> str:
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if _local_store(uri):  # keep artifacts beside the database, not wherever cwd happens to be
        base = Path(uri.split("///", 1)[-1]).parent if uri.startswith("sqlite:") else Path.cwd()
        location = (base / "mlartifacts").resolve().as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it meanwhile
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def start_run(uri: str, experiment: str, run_name: str, tags: dict[str, str]) -> str:
    mlflow_client = client(uri)
    experiment_id = ensure_experiment(mlflow_client, experiment, uri)
    run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=tags)
    return run.info.run_id


def log_params(uri: str, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    entries = [Param(k, "***" if is_secret(k) else str(v)[:PARAM_VALUE_LIMIT])
               for k, v in params.items()]
    mlflow_client = client(uri)
    for start in range(0, len(entries), BATCH_LIMIT):
        mlflow_client.log_batch(run_id, params=entries[start : start + BATCH_LIMIT])


def log_metrics(uri: str, run_id: str, metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    entries = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    mlflow_client = client(uri)
    for start in range(0, len(entries), 1000):
        mlflow_client.log_batch(run_id, metrics=entries[start : start + 1000])


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    entries = [RunTag(k, str(v)[:PARAM_VALUE_LIMIT]) for k, v in tags.items()]
    mlflow_client = client(uri)
    for start in range(0, len(entries), BATCH_LIMIT):
        mlflow_client.log_batch(run_id, tags=entries[start : start + BATCH_LIMIT])


def log_dataset(uri: str, run_id: str, items: pd.DataFrame, *, name: str, source: str,
                digest: str, context: str = "evaluation") -> None:
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    frame = items.copy()
    for column in frame.columns:  # list cells do not fit MLflow's schema inference
        if frame[column].map(lambda v: isinstance(v, list | tuple)).any():
            frame[column] = frame[column].map(lambda v: " | ".join(map(str, v)))
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways"
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:32])
    entity = DatasetInput(dataset._to_mlflow_entity(),
                          tags=[InputTag("mlflow.data.context", context)])
    client(uri).log_inputs(run_id, datasets=[entity])


def log_table(uri: str, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    client(uri).log_table(run_id, data=frame, artifact_file=artifact_file)


def log_artifacts(uri: str, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
    client(uri).log_artifacts(run_id, str(folder), artifact_path=artifact_path)


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status=status)


def run_link(uri: str, run_id: str, experiment_id: str | None = None) -> str:
    """A UI address for HTTP tracking servers; for local stores, how to open the UI."""
    if uri.startswith(("http://", "https://")):
        experiment_id = experiment_id or client(uri).get_run(run_id).info.experiment_id
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"mlflow ui --backend-store-uri {uri}  (then open run {run_id})"
