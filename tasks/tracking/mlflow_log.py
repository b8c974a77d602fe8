"""MLflow logging with explicit ``run_id`` everywhere (Prefect tasks run in threads, and the
fluent API keeps its active run per thread). Calls are batched: over HTTP each costs ~55 ms.

A tracking server that goes away mid-run: MLflow's HTTP retries are bounded (``HTTP_DEFAULTS``,
unless set in the environment) so a dead server fails in seconds, and then the results of a
run already started are spooled locally (``tasks.tracking.spool``) instead of raising; ``bifocal
runs flush`` sends them later."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.secrets import is_secret_key, mask_value, redact_url, split_tracking_uri
from tasks.tracking import spool

PARAM_VALUE_LIMIT = 6000
BATCH_LIMIT = 100  # params/tags per log_batch call (MLflow allows 100 params per batch)
METRIC_BATCH_LIMIT = 1000
# MLflow's defaults retry for minutes (7 retries, backoff factor 2, 120 s timeout): a dead server
# should fail in seconds (0 + 2 + 4 s of backoff, plus jitter) and the results go to the spool.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

logger = logging.getLogger(__name__)


def tracking_uri(configured: str | None) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working dir.
    An http(s) URI's ``user:password@`` moves into MLFLOW_TRACKING_USERNAME / _PASSWORD (as
    the config does at load), so the URI handed around (and that MLflow prints) has none."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri and uri.startswith(("http://", "https://")):
        uri = split_tracking_uri(uri) or uri
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def bounded_http_retries() -> None:
    """MLflow's HTTP retry settings, ``HTTP_DEFAULTS`` for those not set in the environment."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def client(uri: str):
    from mlflow import MlflowClient

    bounded_http_retries()
    return MlflowClient(tracking_uri=uri)


def unreachable(error: BaseException) -> bool:
    """Whether an MLflow call failed for want of a server: connection refused or reset, a
    timeout, or 5xx answers until the retries ran out (MLflow wraps these in an
    MlflowException; the requests error is in its chain)."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.exceptions.ConnectionError | requests.exceptions.Timeout
                      | requests.exceptions.RetryError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _announce(message: str) -> None:
    """A warning in the flow run's log (Prefect) or, outside a run, the Python log."""
    if "prefect" in sys.modules:  # inside a flow run it is imported; never import it for this
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError

        try:
            get_run_logger().warning(message)
            return
        except MissingContextError:
            pass
    logger.warning(message)


def _deliver(uri: str, run_id: str, send: Callable[[], Any],
             keep: Callable[[spool.RunSpool], None]) -> None:
    """``send()`` to the server; when the run is already spooling, or the server is unreachable
    after MLflow's retries, ``keep()`` the operation in the run's spool instead."""
    box = spool.for_run(run_id)
    if not box.active():
        try:
            send()
            return
        except Exception as error:
            if not unreachable(error):
                raise
            box.open(uri, f"{type(error).__name__}: {error}")
            _announce(f"MLflow at {redact_url(uri)} is unreachable ({type(error).__name__}); "
                      f"the results of run {run_id} are spooled in {box.folder}")
    keep(box)


def _log_batches(uri: str, run_id: str, batches: list[dict[str, list]]) -> None:
    """log_batch calls one by one: once one cannot be delivered, it and the rest are spooled."""
    for batch in batches:
        _deliver(uri, run_id, partial(_send_batch, uri, run_id, batch),
                 partial(_keep_batch, batch=batch))


def _send_batch(uri: str, run_id: str, batch: dict[str, list]) -> None:
    client(uri).log_batch(run_id, **batch)


def _keep_batch(box: spool.RunSpool, batch: dict[str, list]) -> None:
    box.batch(**batch)


def _local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def ensure_experiment(mlflow_client, name: str, uri: str) -> str:
    """The experiment's id; a missing one is created, tagged as a model-training experiment
    (``tasks.tracking.ui``: MLflow's UI shows its runs, not the GenAI overview)."""
    from tasks.tracking.ui import experiment_tags

    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if _local_store(uri):  # keep artifacts beside the database, not wherever cwd happens to be
        base = Path(uri.split("///", 1)[-1]).parent if uri.startswith("sqlite:") else Path.cwd()
        location = (base / "mlartifacts").resolve().as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location,
                                               tags=experiment_tags())
    except Exception:  # another process created it meanwhile
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def is_secret(key: str) -> bool:
    """Whole-segment match (``api_token`` yes, ``max_new_tokens`` no): ``tasks.secrets``."""
    return is_secret_key(key)


def _shown(key: str, value: object) -> str:
    """What MLflow may store for a param/tag: secret keys masked, URL credentials removed."""
    return str(mask_value(key, str(value)))[:PARAM_VALUE_LIMIT]


def start_run(uri: str, experiment: str, run_name: str, tags: dict[str, str],
              work_dir: str | Path | None = None) -> str:
    """Create the run; its results are spooled under ``work_dir/spool`` should the server go
    away later (default ``.bifocal/work``)."""
    mlflow_client = client(uri)
    experiment_id = ensure_experiment(mlflow_client, experiment, uri)
    run = mlflow_client.create_run(experiment_id, run_name=run_name,
                                   tags={k: _shown(k, v) for k, v in tags.items()})
    if work_dir is not None:
        spool.bind(run.info.run_id, work_dir)
    return run.info.run_id


def log_params(uri: str, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    entries = [Param(k, _shown(k, v)) for k, v in params.items()]
    _log_batches(uri, run_id, [{"params": entries[start : start + BATCH_LIMIT]}
                               for start in range(0, len(entries), BATCH_LIMIT)])


def log_metrics(uri: str, run_id: str, metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    entries = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    _log_batches(uri, run_id, [{"metrics": entries[start : start + METRIC_BATCH_LIMIT]}
                               for start in range(0, len(entries), METRIC_BATCH_LIMIT)])


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    entries = [RunTag(k, _shown(k, v)) for k, v in tags.items()]
    _log_batches(uri, run_id, [{"tags": entries[start : start + BATCH_LIMIT]}
                               for start in range(0, len(entries), BATCH_LIMIT)])


def log_dataset(uri: str, run_id: str, items: pd.DataFrame, *, name: str, source: str,
                digest: str, context: str = "evaluation") -> None:
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    frame = items.copy()
    for column in frame.columns:  # list cells do not fit MLflow's schema inference
        if frame[column].map(lambda v: isinstance(v, list | tuple)).any():
            frame[column] = frame[column].map(lambda v: " | ".join(map(str, v)))
    # UserWarnings that do not apply: a local path "can be interpreted in multiple ways", and
    # the schema hint about integer columns with missing values is for model serving
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:32])
        entity = DatasetInput(dataset._to_mlflow_entity(),
                              tags=[InputTag("mlflow.data.context", context)])
    _deliver(uri, run_id, lambda: client(uri).log_inputs(run_id, datasets=[entity]),
             lambda box: box.inputs([entity]))


def log_table(uri: str, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    _deliver(uri, run_id,
             lambda: client(uri).log_table(run_id, data=frame, artifact_file=artifact_file),
             lambda box: box.table(frame, artifact_file))


def log_artifacts(uri: str, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
    _deliver(uri, run_id,
             lambda: client(uri).log_artifacts(run_id, str(folder), artifact_path=artifact_path),
             lambda box: box.artifacts(Path(folder), artifact_path))


def log_figure(uri: str, run_id: str, figure: Any, artifact_file: str) -> None:
    """A matplotlib figure as an image artifact (``plots/recall.png``); spooled as that PNG
    when the server is unreachable."""
    _deliver(uri, run_id, lambda: client(uri).log_figure(run_id, figure, artifact_file),
             partial(_keep_figure, figure=figure, artifact_file=artifact_file))


def _keep_figure(box: spool.RunSpool, figure: Any, artifact_file: str) -> None:
    import tempfile

    parent = Path(artifact_file).parent.as_posix()
    with tempfile.TemporaryDirectory() as folder:
        figure.savefig(Path(folder) / Path(artifact_file).name)
        box.artifacts(Path(folder), None if parent == "." else parent)


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Set the final status; when the run was spooled, record it there and say how to flush."""
    _deliver(uri, run_id, lambda: client(uri).set_terminated(run_id, status=status),
             lambda box: box.end(status))
    box = spool.for_run(run_id)
    if box.active():
        _announce(box.notice())


def spool_notice(run_id: str) -> str | None:
    """How to send a spooled run's results (None when nothing of it is spooled here)."""
    box = spool.for_run(run_id)
    return box.notice() if box.active() else None


def run_link(uri: str, run_id: str, experiment_id: str | None = None) -> str:
    """A UI address for HTTP tracking servers; for local stores, how to open the UI (shown to
    people: without credentials)."""
    shown = redact_url(uri) or uri
    if uri.startswith(("http://", "https://")):
        if experiment_id is None and not spool.for_run(run_id).active():
            try:
                experiment_id = client(uri).get_run(run_id).info.experiment_id
            except Exception as error:
                if not unreachable(error):
                    raise
        if experiment_id is None:  # server unreachable: the UI's direct run address
            return f"{shown.rstrip('/')}/#/runs/{run_id}"
        return f"{shown.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"mlflow ui --backend-store-uri {shown}  (then open run {run_id})"
