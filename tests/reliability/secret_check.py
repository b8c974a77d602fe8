"""Planted-secret check: run real evaluations whose configuration carries unique secrets, then
search every place a run leaves something for them.

The secrets: the password of an MLflow tracking server (behind a loopback gateway that demands
HTTP basic auth) given inside ``tracking.tracking_uri``, the same credentials given inside
``MLFLOW_TRACKING_URI`` for a second run, and a token inside a URL in
``metric_options.clip_score.model`` (an option the run validates but does not use). Both runs
go through the ``bifocal run`` command in this process. Searched afterwards: the MLflow server's
database files and artifact folder, the report folders, the work folder, the Prefect database
(and its WAL), Prefect's home folder (files written during the check), every log record,
stdout/stderr (Python and file-descriptor level) and the MLflow server's own log.

``run_secret_check(tmp)`` returns ``{"planted": n, "found": m, ...}``; ``found`` must be 0.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.helpers import build_tiny_clip

USER = "bifocal-user"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-authorization",
              "authorization", "te", "trailer", "upgrade", "content-length", "host"}


# ----------------------------------------------------------------- a gateway with basic auth


class AuthGateway:
    """A loopback reverse proxy in front of an MLflow server that lets through only requests
    carrying ``Authorization: Basic user:password`` (like an auth gateway in production)."""

    def __init__(self, upstream: str, user: str, password: str) -> None:
        self.upstream = urlsplit(upstream)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.expected = f"Basic {token}"
        self.password = password
        self.authenticated = 0
        self.rejected: list[str] = []
        self.secret_in_path = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AuthGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self) -> None:
                body = self._body()
                with gateway._lock:
                    if gateway.password in self.path:
                        gateway.secret_in_path += 1
                    if self.headers.get("Authorization") != gateway.expected:
                        gateway.rejected.append(f"{self.command} {self.path}")
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    gateway.authenticated += 1
                up = gateway.upstream
                connection = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = up.netloc
                headers["Content-Length"] = str(len(body))
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                finally:
                    connection.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        return Handler


# ------------------------------------------------------------------------- capturing output


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is skipped
            self.lines.append(f"{record.name} {record.levelname} {record.msg!r} {record.args!r}")


@contextlib.contextmanager
def captured_output(folder: Path) -> Iterator[dict[str, Any]]:
    """Every log record, Python-level stdout/stderr and file-descriptor 1/2 output."""
    handler = _Records()
    names = ["", "prefect", "prefect.flow_runs", "prefect.task_runs", "mlflow", "tasks", "flows"]
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addHandler(handler)
    out, err = io.StringIO(), io.StringIO()
    fd_file = folder / "fd-output.txt"
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with fd_file.open("wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        captured: dict[str, Any] = {"logs": handler.lines}
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for logger in loggers:
                logger.removeHandler(handler)
            captured["stdout"] = out.getvalue()
            captured["stderr"] = err.getvalue()
            captured["fd"] = fd_file.read_bytes().decode(errors="replace")


# ------------------------------------------------------------------------------- searching


def search_files(root: Path, needles: list[bytes], since: float | None = None) -> list[str]:
    """Files under ``root`` (a file or folder) whose bytes contain a needle (as is or in
    UTF-16, as some stores write text)."""
    forms = [form for needle in needles
             for form in (needle, needle.decode().encode("utf-16-le"))]
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    hits = []
    for path in paths:
        try:
            if since is not None and path.stat().st_mtime < since:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        hits += [f"{path}: {form[:4]!r}..." for form in forms if form in data]
    return hits


def prefect_database() -> Path:
    """The SQLite file of the Prefect server in use (the test harness's temporary one)."""
    from prefect.settings import get_current_settings

    secret = get_current_settings().server.database.connection_url
    url = secret.get_secret_value() if secret is not None else ""
    if not url.startswith("sqlite"):
        raise RuntimeError(f"the Prefect database is not SQLite: {url.split(':')[0]}")
    return Path(url.split("///", 1)[1])


def flush_prefect() -> None:
    """Send queued logs and events to the Prefect server before its database is searched."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=10)


@contextlib.contextmanager
def _restored_environment() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _harness(start: bool) -> Iterator[None]:
    if not start:
        yield
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# ------------------------------------------------------------------------------ the check


def run_secret_check(tmp: Path, *, own_harness: bool = True,
                     model_dir: Path | None = None) -> dict[str, Any]:
    """Plant secrets, run two evaluations through ``bifocal run`` against an MLflow server
    that requires them, search every store. ``own_harness=False`` when a Prefect test harness
    is already active (the pytest session's)."""
    from flows.settings import apply_defaults

    apply_defaults()
    import yaml

    from flows import cli
    from tests.helpers import write_dataset
    from tests.services import mlflow_server

    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    password = f"pw-{uuid.uuid4().hex}"
    token = f"tok-{uuid.uuid4().hex}"
    planted = [password, token]
    needles = [value.encode() for value in planted]
    started = time.time() - 1
    model = model_dir or build_tiny_clip(tmp / "tiny-clip")
    manifest = write_dataset(tmp / "ds", n=6)
    server_dir = tmp / "mlflow-server"
    server_dir.mkdir(exist_ok=True)
    stores = {"mlflow database + server log": server_dir, "mlflow artifacts": tmp / "artifacts",
              "reports": tmp / "reports", "work folder": tmp / "work"}
    outcome: dict[str, Any] = {"planted": len(planted)}
    with _restored_environment(), _harness(own_harness), \
            mlflow_server(f"sqlite:///{server_dir / 'mlflow.db'}", str(tmp / "artifacts"),
                          server_dir) as upstream, \
            AuthGateway(upstream, USER, password) as gateway:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                     "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            os.environ.pop(name, None)
        host = urlsplit(gateway.uri).netloc
        config = {
            "model": {"path": str(model), "batch_size": 4,
                      "generation": {"max_new_tokens": 32}},
            "dataset": {"path": str(manifest)},
            # not scored by a retrieval run; a URL with credentials goes into the environment
            "metric_options": {"clip_score": {"model": f"http://scorer:{token}@127.0.0.1:9/m"}},
            "statistics": {"bootstrap": 50},
            "review": {"size": 2},
            "report": {"destination": str(tmp / "reports")},
            "tracking": {"tracking_uri": f"http://{USER}:{password}@{host}",
                         "experiment": "secret-check"},
            "work_dir": str(tmp / "work"),
        }
        config_file = Path(tempfile.mkdtemp(prefix="bifocal-secret-config-")) / "run.yaml"
        config_file.write_text(yaml.safe_dump(config))
        with captured_output(tmp) as output:
            first = cli.main(["run", str(config_file), "--set", "tracking.run_name=planted-1"])
            # second run: the credentials only in MLFLOW_TRACKING_URI, which is not rewritten
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ.pop(name, None)
            os.environ["MLFLOW_TRACKING_URI"] = f"http://{USER}:{password}@{host}"
            second = cli.main(["run", str(config_file), "--set", "tracking.tracking_uri=null",
                               "--set", "tracking.run_name=planted-2", "--json"])
            flush_prefect()
        config_file.unlink()
        config_file.parent.rmdir()
        outcome["exit_codes"] = [first, second]
        outcome |= _mlflow_state(gateway.uri, USER, password)
        outcome["authenticated_requests"] = gateway.authenticated
        outcome["rejected_requests"] = list(gateway.rejected)
        outcome["unauthenticated_probe_status"] = _probe(gateway.uri)
        hits: list[str] = []
        # controls: each store searched does hold what the runs wrote (here: a run name)
        marker = [b"planted-2"]
        controls = {}
        for label, root in stores.items():
            hits += [f"{label}: {hit}" for hit in search_files(root, needles)] \
                if root.exists() else []
            controls[label] = bool(root.exists() and search_files(root, marker))
        database = prefect_database()
        prefect_files = list(database.parent.glob(database.name + "*"))  # .db, -wal, -shm
        for path in prefect_files:
            hits += [f"prefect database: {hit}" for hit in search_files(path, needles)]
        controls["prefect database"] = any(search_files(path, marker) for path in prefect_files)
        controls["stdout"] = "planted-2" in output["stdout"]
        outcome["controls"] = controls
        prefect_home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
        if prefect_home.exists():
            hits += [f"prefect home: {hit}"
                     for hit in search_files(prefect_home, needles, since=started)]
        for stream in ("logs", "stdout", "stderr", "fd"):
            text = "\n".join(output[stream]) if stream == "logs" else output[stream]
            hits += [f"{stream}: {_line(text, value)}" for value in planted if value in text]
        hits += [f"gateway request paths: {gateway.secret_in_path}"] if gateway.secret_in_path \
            else []
        outcome["printed"] = output["stdout"]
        outcome["printed_stderr"] = output["stderr"][-3000:]
        outcome["locations"] = hits
        outcome["found"] = len(hits)
    return outcome


def _line(text: str, value: str) -> str:
    """The first line holding ``value``, with the value itself replaced."""
    line = next(line for line in text.splitlines() if value in line)
    return line.replace(value, "<PLANTED>")[:300]


def _probe(uri: str) -> int:
    """Status of a request without credentials (the gateway must refuse it)."""
    connection = http.client.HTTPConnection(urlsplit(uri).hostname, urlsplit(uri).port,
                                            timeout=30)
    try:
        connection.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1")
        return connection.getresponse().status
    finally:
        connection.close()


def _stored_config(client: Any, run_id: str) -> dict[str, Any]:
    """The run's config.yaml artifact."""
    import yaml

    with tempfile.TemporaryDirectory() as folder:
        return yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml", folder))
                              .read_text())


def _mlflow_state(uri: str, user: str, password: str) -> dict[str, Any]:
    """What reached the server: both runs finished, with params, metrics and the report."""
    from mlflow import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("secret-check")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        state = []
        for run in sorted(runs, key=lambda r: r.info.run_name or ""):
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
            state.append({
                "run_name": run.info.run_name, "status": run.info.status,
                "params": len(run.data.params), "metrics": len(run.data.metrics),
                "report_json": "report/report.json" in artifacts,
                "clip_score_model_param": run.data.params.get("metric_options.clip_score.model"),
                # generation settings are not params of a retrieval run: the whole config is
                "max_new_tokens": _stored_config(client, run.info.run_id)["model"]["generation"]
                ["max_new_tokens"],
                "tracking_uri_param": run.data.params.get("tracking.tracking_uri"),
            })
        return {"runs": state}
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)


if __name__ == "__main__":
    import json

    with tempfile.TemporaryDirectory(prefix="bifocal-secret-check-") as folder:
        result = run_secret_check(Path(folder))
    print(json.dumps({k: v for k, v in result.items() if k != "printed"}, indent=2))
    sys.exit(0 if result["found"] == 0 else 1)
