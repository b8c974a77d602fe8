"""The deployments of ``deployments/prefect.yaml`` as Prefect runner deployments, for
``bifocal serve``: one long-running process serves them (schedules, concurrency, parameters and
the typed UI form included) on a single machine, without a work pool or worker.

prefect.yaml stays the one source of truth: each entry maps to ``flow.to_deployment(name=...,
parameters=..., schedules=..., concurrency_limit=...)``. Served deployments run their flows in
the serving process's working directory (prefect.yaml's pull step enters the deploy folder), so
``work_pool`` and the pull/build/push steps do not apply to them.
"""

from __future__ import annotations

import datetime
import importlib
from pathlib import Path
from typing import Any

import yaml

PREFECT_FILE = Path(__file__).resolve().parents[1] / "deployments" / "prefect.yaml"

# keys of a prefect.yaml deployment that a served deployment takes over
SERVED_KEYS = frozenset({"name", "description", "entrypoint", "tags", "version", "parameters",
                         "schedules", "concurrency_limit", "paused", "enforce_parameter_schema"})
# keys that concern workers only: a served deployment runs in the serving process
WORKER_KEYS = frozenset({"work_pool", "pull", "build", "push"})
SCHEDULE_KEYS = frozenset({"cron", "interval", "rrule", "timezone", "slug", "active",
                           "parameters", "day_or"})


class ServeError(ValueError):
    """prefect.yaml holds something ``bifocal serve`` cannot serve as written."""


def read_deployments(path: str | Path = PREFECT_FILE) -> list[dict[str, Any]]:
    """The ``deployments`` entries of a prefect.yaml file."""
    data = yaml.safe_load(Path(path).read_text())
    entries = data.get("deployments") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ServeError(f"{path}: no list of deployments")
    return entries


def load_flow(entrypoint: str) -> Any:
    """``flows/evaluate.py:evaluate`` -> the flow object, imported as ``flows.evaluate``."""
    file, _, name = entrypoint.partition(":")
    if not file.endswith(".py") or not name:
        raise ServeError(f"entrypoint {entrypoint!r} must look like 'path/to/file.py:flow'")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    found = getattr(module, name, None)
    if found is None or not hasattr(found, "to_deployment"):
        raise ServeError(f"entrypoint {entrypoint!r}: {name} is not a flow of {module.__name__}")
    return found


def schedule_of(item: dict[str, Any]) -> Any:
    """One prefect.yaml schedule (cron, interval in seconds or rrule, plus timezone, slug,
    active, parameters, day_or) as a ``prefect.schedules.Schedule``."""
    from prefect.schedules import Schedule

    unknown = set(item) - SCHEDULE_KEYS
    if unknown:
        raise ServeError(f"schedule {item}: {', '.join(sorted(unknown))} not supported")
    values = dict(item)
    if "interval" in values:
        values["interval"] = datetime.timedelta(seconds=float(values["interval"]))
    return Schedule(**values)


def concurrency_of(value: Any) -> Any:
    """``concurrency_limit``: a number, or ``{limit, collision_strategy}`` as a
    ``ConcurrencyLimitConfig`` (collision strategy ENQUEUE or CANCEL_NEW)."""
    if value is None or isinstance(value, int):
        return value
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    if not isinstance(value, dict):
        raise ServeError(f"concurrency_limit {value!r}: give a number or a mapping")
    return ConcurrencyLimitConfig(**value)


def deployment_options(entry: dict[str, Any]) -> dict[str, Any]:
    """The ``to_deployment`` keyword arguments of one prefect.yaml entry."""
    unknown = set(entry) - SERVED_KEYS - WORKER_KEYS
    if unknown:
        raise ServeError(f"deployment {entry.get('name')!r}: {', '.join(sorted(unknown))} "
                         "cannot be served; serve it through a work pool")
    options: dict[str, Any] = {
        "name": entry["name"], "description": entry.get("description"),
        "tags": entry.get("tags"), "version": entry.get("version"),
        "parameters": entry.get("parameters") or {},
        "schedules": [schedule_of(item) for item in entry.get("schedules") or []],
        "concurrency_limit": concurrency_of(entry.get("concurrency_limit")),
        "paused": entry.get("paused"),
    }
    if "enforce_parameter_schema" in entry:
        options["enforce_parameter_schema"] = bool(entry["enforce_parameter_schema"])
    return options


def build_deployments(path: str | Path = PREFECT_FILE, only: list[str] | None = None
                      ) -> list[Any]:
    """A ``RunnerDeployment`` per prefect.yaml deployment (or the ones named in ``only``),
    with its name, flow, parameters, schedules and concurrency limit; entrypoints are
    relative to the working directory, which must be the repository."""
    entries = read_deployments(path)
    names = [entry.get("name") for entry in entries]
    missing = sorted(set(only or []) - set(names))
    if missing:
        raise ServeError(f"no deployment named {', '.join(missing)} in {path} "
                         f"(there are: {', '.join(map(str, names))})")
    deployments = []
    for entry in entries:
        if only and entry["name"] not in only:
            continue
        file = str(entry.get("entrypoint", "")).partition(":")[0]
        if not (Path.cwd() / file).is_file():
            raise ServeError(f"deployment {entry['name']!r}: {file} is not under the working "
                             f"directory {Path.cwd()}: serve from the repository root")
        flow = load_flow(entry["entrypoint"])
        deployments.append(flow.to_deployment(**deployment_options(entry)))
    return deployments


def describe(deployment: Any) -> str:
    """One line per served deployment: name, entrypoint, schedules, concurrency."""
    schedules = ", ".join(f"{s.schedule.cron or s.schedule.interval or s.schedule.rrule}"
                          f" ({getattr(s.schedule, 'timezone', None) or 'UTC'})"
                          for s in deployment.schedules or []) or "no schedule"
    limit = deployment.concurrency_limit
    options = deployment.concurrency_options
    concurrency = (f"; at most {limit} at a time"
                   + (f" ({options.collision_strategy.value})" if options else "")
                   if limit else "")
    return (f"{deployment.flow_name}/{deployment.name}  {deployment.entrypoint}  "
            f"{schedules}{concurrency}")


def serve_deployments(deployments: list[Any], limit: int | None = None) -> None:
    """Serve until interrupted (Ctrl-C pauses the schedules; the next start resumes them)."""
    from prefect import serve

    serve(*deployments, limit=limit)
