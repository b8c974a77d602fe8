"""``bifocal services up|down|status|env [--dir DIR]``: a team's stack on loopback — an S3
server, PostgreSQL databases, a Prefect server, an MLflow server and a process worker
(``tasks.services``). ``flows/cli.py`` adds it with ``add_services_parser(commands)``.

Exit status: 0; 1 when a service cannot be started, stopped or found (the message names it
and quotes its log's tail, secrets masked), and for ``status`` when a service is not up and
healthy; 2 for invalid options. Only ``env`` prints secrets (the S3 keys, for ``eval``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.services import DownReport, ServiceStatus, UpReport

DEFAULT_DIR = ".bifocal/services"


SERVICES_HELP = (
    "A team's stack on loopback: an S3-compatible server (SeaweedFS), PostgreSQL databases, a "
    "Prefect server and an MLflow tracking server (both on PostgreSQL; MLflow artifacts in S3) "
    "and a process worker for the work pool 'bifocal'. Exit status 0; 1 when a service cannot "
    "be started, stopped or found (the message quotes its log, secrets masked) and for status "
    "when a service is not up and healthy. Only 'env' prints secrets (for eval).")


def add_services_parser(commands: Any) -> None:
    """Add ``services`` with its actions to the ``bifocal`` sub-commands."""
    services = commands.add_parser(
        "services", help="start, stop and inspect a team's stack on loopback (S3, Prefect "
        "server, MLflow server, worker)", description=SERVICES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = services.add_subparsers(dest="services_command", required=True)
    up = _action(actions, "up", cmd_services_up, "start the stack (nothing to do when it is up)")
    up.add_argument("--db-prefix", default="bifocal", metavar="NAME",
                    help="PostgreSQL databases NAME_prefect and NAME_mlflow (default bifocal)")
    _action(actions, "down", cmd_services_down, "stop the stack")
    _action(actions, "status", cmd_services_status,
            "per service: up/down, pid, URL, health (exit 1 unless all are up and healthy)")
    _action(actions, "env", cmd_services_env,
            "print the variables to use the stack: eval \"$(bifocal services env)\"")


def _action(actions: Any, name: str, handler: Callable[[argparse.Namespace], int],
            text: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=text, description=text)
    parser.add_argument("--dir", default=DEFAULT_DIR, metavar="DIR",
                        help=f"the stack's folder: state, logs, data (default {DEFAULT_DIR})")
    parser.set_defaults(handler=handler)
    return parser


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A ServiceError becomes ``bifocal: error: ...`` (with its log tail) and exit status 1."""
    def run(args: argparse.Namespace) -> int:
        from tasks.services import ServiceError

        try:
            return handler(args)
        except ServiceError as error:
            print(f"bifocal: error: {error}", file=sys.stderr)
            return 1
    run.__doc__ = handler.__doc__
    return run


# -------------------------------------------------------------------------------------- up


def _up(args: argparse.Namespace) -> int:
    """Start the stack, printing each service as it becomes healthy, then the URLs."""
    from tasks.services import Options, up

    options = Options(dir=Path(args.dir), db_prefix=args.db_prefix)
    report = up(options, progress=lambda line: print(f"  {line}", flush=True))
    print("\n".join(up_lines(report, args.dir)))
    return 0


def up_lines(report: UpReport, directory: str) -> list[str]:
    """The summary of ``up``: what happened, the URLs, the ``eval`` hint."""
    where = Path(directory).expanduser().absolute()
    head = (f"bifocal services: already up ({where}), nothing started" if report.already
            else f"bifocal services: up in {report.seconds:.1f} s ({where})")
    lines = [head]
    if report.restarted:
        lines.append(f"  (restarted: {', '.join(report.restarted)} had stopped)")
    return [*lines, *url_lines(report), "", f"Use it in this shell: {env_hint(directory)}"]


def url_lines(report: UpReport) -> list[str]:
    from tasks.services import BUCKET, POOL

    urls = {s.name: s.url for s in report.state.services}
    rows = [("Prefect UI", urls["prefect"]), ("Prefect API", f"{urls['prefect']}/api"),
            ("MLflow UI", urls["mlflow"]), ("S3 endpoint", urls["s3"]),
            ("bucket", f"s3://{BUCKET} (MLflow artifacts under s3://{BUCKET}/mlflow)"),
            ("work pool", f"{POOL} (process worker, health {urls['worker']}/health)")]
    return [f"  {name:<12} {value}" for name, value in rows]


def env_hint(directory: str) -> str:
    option = "" if directory == DEFAULT_DIR else f" --dir {shlex.quote(directory)}"
    return f'eval "$(bifocal services env{option})"'


# ------------------------------------------------------------------------ down, status, env


def _down(args: argparse.Namespace) -> int:
    from tasks.services import down

    print(down_line(down(args.dir), args.dir))
    return 0


def down_line(report: DownReport, directory: str) -> str:
    if report.nothing:
        return f"bifocal services: nothing running in {directory}"
    line = f"bifocal services: down in {report.seconds:.1f} s"
    if report.stopped:
        line += f" (stopped {', '.join(report.stopped)})"
    if report.already_stopped:
        line += f" (already stopped: {', '.join(report.already_stopped)})"
    return line


def _status(args: argparse.Namespace) -> int:
    """Print the table; exit status 0 only when every service is up and healthy."""
    from tasks.services import status

    rows = status(args.dir)
    print("\n".join(status_table(rows)))
    return 0 if all(row.running and row.healthy for row in rows) else 1


def status_table(rows: list[ServiceStatus]) -> list[str]:
    table = [("SERVICE", "STATE", "PID", "HEALTH", "URL")] + [
        (row.name, "up" if row.running else "down", str(row.pid or "-"),
         {True: "ok", False: "failing", None: "-"}[row.healthy], row.url) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)),
                       line[4]]) for line in table]


def _env(args: argparse.Namespace) -> int:
    """Print ``export K=V`` lines (the S3 keys included: this command exists to print them)."""
    from tasks.services import environment, export_lines

    print("\n".join(export_lines(environment(args.dir))))
    return 0


cmd_services_up = _guarded(_up)
cmd_services_down = _guarded(_down)
cmd_services_status = _guarded(_status)
cmd_services_env = _guarded(_env)
