"""One MLflow run per evaluation: its name, its tags, and a context that never leaves it
RUNNING."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.config import EvalConfig
from tasks.config_io import config_yaml, run_params
from tasks.secrets import redact_text, redact_url
from tasks.tracking import mlflow_log as ml
from tasks.tracking.cleanup import end_stale_runs, find_stale_runs, heartbeat, owner_tags
from tasks.tracking.fingerprint import git_commit, git_dirty, package_versions


def default_run_name(config: EvalConfig) -> str:
    model = Path(config.model.path.rstrip("/")).name or config.model.path
    data = Path(config.dataset.path.rstrip("/")).stem
    return config.tracking.run_name or f"{model}@{data}"


def prefect_server_outlives() -> bool:
    """Whether the Prefect API this process talks to stays up after it: ``PREFECT_API_URL``
    is set. Without it Prefect runs the flow on a temporary server of its own, which stops
    with the command (``bifocal run`` without a server), so nothing should point at it."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def flow_run_ids() -> dict[str, str]:
    """The current Prefect flow run's id, name and UI address, when it runs on a server that
    outlives the command (empty outside a flow run or on a temporary server)."""
    from prefect import runtime

    flow_run_id = runtime.flow_run.id
    if not flow_run_id or not prefect_server_outlives():
        return {}
    ids = {"id": str(flow_run_id), "name": str(runtime.flow_run.name)}
    url = runtime.flow_run.ui_url
    return ids | ({"url": str(url)} if url else {})


def start_tags(config: EvalConfig, code_version: str, flow_run: dict[str, str] | None = None
               ) -> dict[str, str]:
    """Task, model path, inference code version, git commit, package versions, the Prefect
    flow run (``prefect.flow_run_id``, ``_name``, ``_url``: see ``flow_run_ids``)."""
    tags = {"bifocal.task": config.task.value,
            "bifocal.model_path": redact_url(config.model.path) or config.model.path,
            "bifocal.code_version": code_version}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["bifocal.git_dirty"] = str(git_dirty()).lower()
    tags |= {f"bifocal.version.{k}": v for k, v in package_versions().items()}
    tags["bifocal.cpu"] = cpu_model()
    if config.tracking.parent_run_id:  # a suite's child run, nested under the suite's run
        tags["mlflow.parentRunId"] = config.tracking.parent_run_id
    return tags | {f"prefect.flow_run_{k}": v for k, v in (flow_run or {}).items()}


def cpu_model() -> str:
    """The processor's model name and logical cores (floating-point sums, and so trained
    weights and some metrics, may differ across instruction sets)."""
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle
                         if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def result_tags(dataset: str, model: str, inference: str, cache: str) -> dict[str, str]:
    """Fingerprints of what was evaluated and whether inference came from the cache."""
    return {"bifocal.dataset_fingerprint": dataset, "bifocal.model_fingerprint": model,
            "bifocal.inference_fingerprint": inference, "bifocal.inference_cache": cache}


def runtime_params(runtime: dict[str, str]) -> dict[str, str]:
    """What the adapter resolved (device, dtype, torch_module normalisation statistics), as
    ``resolved.*`` params; from the shard that computed the outputs when they were cached."""
    return {f"resolved.{k}": v for k, v in runtime.items()}


def end_dead_runs(uri: str, experiment: str) -> list[str]:
    """Before a new evaluation: end the experiment's runs left RUNNING by a process that is gone
    (KILLED, tag ``bifocal.error``) and set their Prefect flow runs Crashed. Never fails the
    evaluation: problems are returned as lines to log, with the runs that were ended."""
    try:
        ended = end_stale_runs(uri, find_stale_runs(uri, [experiment]))
    except Exception as error:  # noqa: BLE001 - a check that cannot run must not stop the run
        return [f"stale-run check skipped: {type(error).__name__}: {error}"[:500]]
    return [f"ended MLflow run {run.run_id} ({run.run_name}) KILLED: {run.reason}"
            + (f"; Prefect flow run {run.flow_run_id}: {run.flow_run}" if run.flow_run_id else "")
            for run in ended if run.ended]


def log_config(uri: str, run_id: str, config: EvalConfig) -> None:
    """The whole config (secrets redacted) as the run's ``config.yaml`` artifact: the params
    hold only the sections that apply to the run."""
    with tempfile.TemporaryDirectory(prefix="bifocal-config-") as folder:
        (Path(folder) / "config.yaml").write_text(config_yaml(config), encoding="utf-8")
        ml.log_artifacts(uri, run_id, Path(folder))


@contextmanager
def tracked_run(uri: str, config: EvalConfig, run_name: str, tags: dict[str, str]
                ) -> Iterator[str]:
    """One MLflow run: params (the sections that apply) and config.yaml logged once here; it
    ends FINISHED, or FAILED (KILLED on ^C) with the error as a tag, never left RUNNING by a
    live process. Its owner process is recorded as tags and ``bifocal.heartbeat`` refreshed
    while it runs, so a run whose process was killed outright is found and ended later
    (``end_dead_runs``, ``bifocal runs cleanup``)."""
    run_id = ml.start_run(uri, config.tracking.experiment, run_name, tags | owner_tags(),
                          work_dir=config.work_dir)  # spool there if the server goes away
    ml.log_params(uri, run_id, run_params(config))
    log_config(uri, run_id, config)
    started = time.perf_counter()
    try:
        with heartbeat(uri, run_id):
            yield run_id
    except BaseException as error:
        message = redact_text(f"{type(error).__name__}: {error}")  # messages may quote URIs
        ml.set_tags(uri, run_id, {"bifocal.error": message[:5000]})
        ml.end_run(uri, run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    ml.log_metrics(uri, run_id, {"wall_time_s": time.perf_counter() - started})
    ml.end_run(uri, run_id, "FINISHED")
