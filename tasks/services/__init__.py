"""A team's stack on loopback, one command: an S3-compatible server (SeaweedFS), PostgreSQL
databases, a Prefect server on PostgreSQL, an MLflow tracking server (PostgreSQL backend,
artifacts proxied to S3) and a process worker for the work pool ``bifocal``.

Plain Python, no Prefect flow: ``up(Options(dir=...))``, ``down(dir)``, ``status(dir)``,
``environment(dir)`` + ``export_lines``; ``bifocal services up|down|status|env`` wraps them
(``flows/services_cli.py``). Failures raise ``ServiceError`` naming the service. See
``stack`` (the protocol), ``specs`` (commands and environments), ``state`` (the folder) and
``procs`` (process groups, health, redacted log tails).
"""

from tasks.services.procs import ServiceError
from tasks.services.specs import BUCKET, POOL, Options
from tasks.services.stack import (
    DownReport,
    ServiceStatus,
    UpReport,
    down,
    environment,
    export_lines,
    status,
    up,
)

__all__ = ["BUCKET", "POOL", "DownReport", "Options", "ServiceError", "ServiceStatus",
           "UpReport", "down", "environment", "export_lines", "status", "up"]
