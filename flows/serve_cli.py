"""``bifocal serve``: the team's deployments (deployments/prefect.yaml) served by this process,
for one machine without a work pool or worker. flows/cli.py adds it with
``add_serve_parser(commands)``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from flows.serve import PREFECT_FILE, ServeError

DESCRIPTION = (
    "Serves every deployment of the prefect.yaml file (default: this repository's "
    "deployments/prefect.yaml) from this process until Ctrl-C: the nightly suite on its "
    "schedule, the ad-hoc evaluation, compare and review-ingest from the Prefect UI's Run "
    "button. Runs execute here, in the repository ($BIFOCAL_REPO, else the current "
    "directory). Point PREFECT_API_URL at a running Prefect server (prefect server start) to "
    "keep the runs and use the UI; without it Prefect starts a temporary server that ends "
    "with this process. Do not also `prefect deploy` the same file to that server: a served "
    "deployment and a work-pool deployment of the same name replace each other.")


def cmd_serve(args: argparse.Namespace) -> int:
    """List or serve the deployments; exit status 0 after Ctrl-C."""
    directory = Path(args.directory).expanduser().resolve()
    if not directory.is_dir():
        raise ServeError(f"--directory {directory}: no such folder")
    os.chdir(directory)  # entrypoints and the configs' relative paths are the repository's
    from flows.serve import build_deployments, describe, serve_deployments

    deployments = build_deployments(args.prefect_file, args.only or None)
    for deployment in deployments:
        print(describe(deployment))
    if args.list:
        return 0
    if not os.environ.get("PREFECT_API_URL"):
        print("bifocal serve: PREFECT_API_URL is not set: runs go to a temporary Prefect "
              "server that ends with this process", file=sys.stderr)
    serve_deployments(deployments, limit=args.limit)
    return 0


def add_serve_parser(commands: Any) -> None:
    """``bifocal serve [--prefect-file FILE] [--only NAME ...] [--limit N] [--list]``."""
    serve = commands.add_parser(
        "serve", help="serve the deployments of deployments/prefect.yaml from this process "
        "(no work pool or worker)", description=DESCRIPTION)
    serve.add_argument("--prefect-file", default=str(PREFECT_FILE), metavar="FILE",
                       help="prefect.yaml to serve (default: %(default)s)")
    serve.add_argument("--only", action="append", default=[], metavar="NAME",
                       help="serve only this deployment (repeatable)")
    serve.add_argument("--limit", type=int, default=None, metavar="N",
                       help="at most N flow runs at a time in this process (default: no limit)")
    serve.add_argument("--directory", default=os.environ.get("BIFOCAL_REPO") or os.getcwd(),
                       metavar="DIR", help="working directory of the runs: the repository "
                       "(default: $BIFOCAL_REPO, else the current directory)")
    serve.add_argument("--list", action="store_true",
                       help="print the deployments that would be served and exit")
    serve.set_defaults(handler=cmd_serve)
