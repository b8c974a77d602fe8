"""Sending spooled results to MLflow once it is reachable again (``bifocal runs flush``):
each run's operations are replayed in order and moved to ``done/`` as they are sent, so an
interrupted flush resumes without resending; a run with no recorded status ends FAILED."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.tracking import mlflow_log as ml
from tasks.tracking.spool import OP, SPOOLED_TAG, RunSpool, _unreachable_text, spooled_runs


@dataclass(frozen=True)
class FlushResult:
    run_id: str
    status: str  # "flushed", "skipped" (still being written) or "failed" (spool kept)
    sent: int
    message: str


def _writer_alive(meta: dict[str, Any]) -> bool:
    if meta.get("host") != socket.gethostname() or not meta.get("pid"):
        return False
    if int(meta["pid"]) == os.getpid():
        return False  # this process: a flush from inside the writer is explicit
    try:
        os.kill(int(meta["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def replay(mlflow_client: Any, run_id: str, op: Path) -> None:
    """Send one spooled operation to the server."""
    from mlflow.entities import DatasetInput, Metric, Param, RunTag

    data = json.loads((op / OP).read_text())
    kind = data["kind"]
    if kind == "batch":
        mlflow_client.log_batch(
            run_id, metrics=[Metric(k, float(v), int(t), int(s)) for k, v, t, s in data["metrics"]],
            params=[Param(k, v) for k, v in data["params"]],
            tags=[RunTag(k, v) for k, v in data["tags"]])
    elif kind == "table":
        import pandas as pd

        frame = (pd.read_parquet(op / "table.parquet") if (op / "table.parquet").is_file()
                 else pd.read_json(op / "table.json", orient="split"))
        mlflow_client.log_table(run_id, data=frame, artifact_file=data["artifact_file"])
    elif kind == "artifacts":
        mlflow_client.log_artifacts(run_id, str(op / "files"),
                                    artifact_path=data["artifact_path"])
    elif kind == "inputs":
        from mlflow.protos.service_pb2 import DatasetInput as DatasetInputProto

        datasets = []
        for text in data["datasets"]:
            proto = DatasetInputProto()
            proto.ParseFromString(base64.b64decode(text))
            datasets.append(DatasetInput.from_proto(proto))
        mlflow_client.log_inputs(run_id, datasets=datasets)
    elif kind == "end":
        mlflow_client.set_terminated(run_id, status=data["status"], end_time=data["end_time"])
    else:
        raise ValueError(f"unknown spooled operation {kind!r} in {op}")


def flush_run(box: RunSpool, tracking_uri: str | None = None) -> FlushResult:
    """Replay one run's spool in order; end the run; remove the spool when all was sent."""

    meta = box.meta()
    if not box.ended() and _writer_alive(meta):
        return FlushResult(box.run_id, "skipped", 0, f"run {box.run_id} is still being "
                           f"spooled by process {meta['pid']}; flush it after it ends")
    if tracking_uri is None and meta.get("tracking_uri_redacted"):
        return FlushResult(box.run_id, "failed", 0, "the spooled tracking URI had credentials "
                           "(not stored): pass --tracking-uri")
    uri = tracking_uri or meta["tracking_uri"]
    shown = _unreachable_text(uri)
    mlflow_client = ml.client(uri)
    forget_artifact_repo(box.run_id)
    sent = 0
    try:
        mlflow_client.get_run(box.run_id)  # the run must exist where its results go
        mlflow_client.set_tag(box.run_id, SPOOLED_TAG, "true")
        for op in box.pending():
            replay(mlflow_client, box.run_id, op)
            box.mark_done(op)
            sent += 1
        final = box.final_status()
        if final is None:  # the writer died before it recorded how the run ended
            mlflow_client.set_tag(box.run_id, "bifocal.error", "the evaluation stopped before "
                                  "its spooled results were complete (no final status)")
            mlflow_client.set_terminated(box.run_id, status="FAILED")
        elif final == "FINISHED" and "bifocal.error" in mlflow_client.get_run(
                box.run_id).data.tags:  # e.g. ended KILLED meanwhile by a dead-run cleanup
            mlflow_client.delete_tag(box.run_id, "bifocal.error")
    except Exception as error:  # noqa: BLE001 - reported per run; the spool is kept
        from tasks.secrets import redact_text

        why = ("unreachable" if ml.unreachable(error)
               else f"{type(error).__name__}: {redact_text(str(error))[:500]}")
        return FlushResult(box.run_id, "failed", sent, f"run {box.run_id}: MLflow at {shown}: "
                           f"{why}; {sent} operation(s) sent, the rest stay in {box.folder}")
    shutil.rmtree(box.folder, ignore_errors=True)
    status = mlflow_client.get_run(box.run_id).info.status
    return FlushResult(box.run_id, "flushed", sent, f"run {box.run_id}: {sent} spooled "
                       f"operation(s) sent to {shown}; run status {status}")




def forget_artifact_repo(run_id: str) -> None:
    """MLflow caches a run's artifact repository by run id alone, with the server address it
    was first used with: a run started against a server that has since moved (a new port
    after an outage) would upload to the old address from this process."""
    from mlflow.tracking._tracking_service import utils

    utils._artifact_repos_cache.pop(run_id, None)


def flush(work_dir: str | Path | None = None, tracking_uri: str | None = None,
          run_ids: list[str] | None = None) -> list[FlushResult]:
    """Flush every spooled run under ``work_dir/spool`` (or only ``run_ids``)."""
    return [flush_run(box, tracking_uri) for box in spooled_runs(work_dir)
            if not run_ids or box.run_id in run_ids]
