"""Real services on loopback for tests: a PostgreSQL database and an MLflow tracking server.

A missing service skips the test with the reason, except under CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import in_ci

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def unavailable(reason: str):
    return pytest.fail(reason) if in_ci() else pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL (trust auth); dropped afterwards."""
    try:
        import psycopg2
    except ImportError:
        unavailable("psycopg2 is not installed")
    name = f"bifocal_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres",
                                 connect_timeout=5)
    except psycopg2.OperationalError as error:
        unavailable(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}: {error}")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def stop_process_group(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_http(url: str, process: subprocess.Popen, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} not healthy after {timeout:.0f} s")


@contextmanager
def mlflow_server(backend_uri: str, artifacts: str, log_dir: Path,
                  env: dict[str, str] | None = None) -> Iterator[str]:
    """``mlflow server`` on a free loopback port; yields its tracking URI."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / "mlflow-server.log").open("wb")
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1", "--backend-store-uri", backend_uri,
               "--artifacts-destination", artifacts]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})}, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{uri}/health", process, timeout=90)
        yield uri
    except RuntimeError as error:
        log.flush()
        tail = (log_dir / "mlflow-server.log").read_text(errors="replace")[-3000:]
        unavailable(f"MLflow server did not start: {error}\n{tail}")
    finally:
        stop_process_group(process)
        log.close()
