"""What a killed process leaves behind, found and closed.

A process killed with SIGKILL (or by the OOM killer, a lost machine, a job scheduler) runs no
``finally``: its MLflow run stays ``RUNNING``, its Prefect flow run stays ``Running`` and the
inference cache keeps the staging folder it was writing. Every evaluation run therefore
records its owner as tags (``bifocal.pid``, ``bifocal.host``, ``bifocal.pid_namespace``,
``bifocal.pid_started``) and refreshes ``bifocal.heartbeat`` while it lives. A ``RUNNING`` run is
dead when:

- its owner ran on this machine (same host name and PID namespace) and that process is gone
  (or the pid now belongs to a process started at another time), or
- its owner ran elsewhere and its heartbeat is older than the age limit (``STALE_AFTER_S``,
  or ``--older-than``), or
- it has no owner tags (older runs, suite and comparison runs) and an age limit was given
  explicitly: then its start time is compared with the limit.

Dead runs are ended ``KILLED`` with the tag ``bifocal.error``; the Prefect flow run named by the
run's ``prefect.flow_run_id`` tag is set ``Crashed`` when the Prefect API has it. The evaluate
flow does this for its experiment when it starts; ``bifocal runs cleanup`` does it on demand and
also removes stale staging folders from the inference cache.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tasks.processes import (
    host_name,
    pid_namespace,
    process_alive,
    process_started,
    same_machine,
)

HEARTBEAT_S = 60.0  # how often a live run refreshes bifocal.heartbeat ($BIFOCAL_HEARTBEAT_SECONDS)
STALE_AFTER_S = 900.0  # a run of another machine is dead after this long without a heartbeat
OWNER_TAGS = ("bifocal.pid", "bifocal.host", "bifocal.pid_namespace", "bifocal.pid_started")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def owner_tags() -> dict[str, str]:
    """Tags naming the process that owns a run, recorded when the run starts."""
    pid = os.getpid()
    return {"bifocal.pid": str(pid), "bifocal.host": host_name(),
            "bifocal.pid_namespace": pid_namespace(), "bifocal.pid_started": process_started(pid),
            "bifocal.heartbeat": utc_now()}


def heartbeat_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("BIFOCAL_HEARTBEAT_SECONDS", HEARTBEAT_S)))
    except ValueError:
        return HEARTBEAT_S


@contextmanager
def heartbeat(uri: str, run_id: str) -> Iterator[None]:
    """Refresh the run's ``bifocal.heartbeat`` tag every ``$BIFOCAL_HEARTBEAT_SECONDS`` (60 s)
    from a daemon thread while the block runs (one tag write each time; failures are ignored:
    a missed beat only matters after ``STALE_AFTER_S``)."""
    from tasks.tracking import mlflow_log as ml

    stop = threading.Event()
    period = heartbeat_seconds()

    def beat() -> None:
        while not stop.wait(period):
            with suppress(Exception):  # the next beat tries again
                ml.set_tags(uri, run_id, {"bifocal.heartbeat": utc_now()})

    thread = threading.Thread(target=beat, name=f"bifocal-heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


# --- which RUNNING runs are dead ---------------------------------------------------------------

def _age_s(timestamp: str, now: float) -> float | None:
    try:
        parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return now - parsed.timestamp()


def death_reason(tags: dict[str, str], start_time_ms: int | None, *,
                 older_than: float | None = None, now: float | None = None) -> str | None:
    """Why a RUNNING run's owner is gone (the ``bifocal.error`` text), or None while it may
    still be alive. ``older_than``: the heartbeat age limit for runs of other machines
    (default ``STALE_AFTER_S``); given explicitly, it also ends runs without owner tags that
    started longer ago than that."""
    now = time.time() if now is None else now
    limit = STALE_AFTER_S if older_than is None else older_than
    pid_text = tags.get("bifocal.pid", "")
    if not pid_text.isdigit():
        if older_than is None or start_time_ms is None:
            return None
        started = now - start_time_ms / 1000
        return (f"killed: no owner process recorded and started {started:.0f} s ago (limit "
                f"{limit:.0f} s)") if started > limit else None
    pid, host = int(pid_text), tags.get("bifocal.host", "")
    if same_machine(host, tags.get("bifocal.pid_namespace", "")):
        if process_alive(pid, tags.get("bifocal.pid_started", "")):
            return None
        return f"killed: process {pid}@{host} ended without closing the run"
    beat = tags.get("bifocal.heartbeat")
    age = _age_s(beat, now) if beat else None
    if age is None and start_time_ms is not None:
        age = now - start_time_ms / 1000
    if age is None or age <= limit:
        return None
    return (f"killed: process {pid}@{host} (another machine) sent no heartbeat for {age:.0f} s "
            f"(limit {limit:.0f} s)")


@dataclass
class StaleRun:
    run_id: str
    run_name: str
    experiment: str
    reason: str
    flow_run_id: str | None = None
    flow_run: str = ""  # what happened to the Prefect flow run
    ended: bool = False


def _experiment_ids(client: Any, experiments: list[str] | None) -> dict[str, str]:
    """id -> name of the named experiments (those that exist), or of all active ones."""
    if experiments:
        found = (client.get_experiment_by_name(name) for name in experiments)
        return {e.experiment_id: e.name for e in found if e is not None}
    return {e.experiment_id: e.name for e in client.search_experiments()}


def find_stale_runs(uri: str, experiments: list[str] | None = None,
                    older_than: float | None = None) -> list[StaleRun]:
    """RUNNING runs of ``experiments`` (default: all) whose owner process is gone."""
    from tasks.tracking import mlflow_log as ml

    client = ml.client(uri)
    names = _experiment_ids(client, experiments)
    if not names:
        return []
    stale: list[StaleRun] = []
    now = time.time()
    token = None
    while True:
        page = client.search_runs(list(names), "attributes.status = 'RUNNING'",
                                  max_results=1000, page_token=token)
        for run in page:
            tags = run.data.tags
            reason = death_reason(tags, run.info.start_time, older_than=older_than, now=now)
            if reason is not None:
                stale.append(StaleRun(run.info.run_id, run.info.run_name or "",
                                      names.get(run.info.experiment_id, run.info.experiment_id),
                                      reason, tags.get("prefect.flow_run_id") or None))
        token = page.token
        if not token:
            return stale


def end_stale_runs(uri: str, runs: list[StaleRun], *, prefect: bool = True) -> list[StaleRun]:
    """End each run KILLED with its reason as ``bifocal.error`` (ended at its last heartbeat
    when known), then set its Prefect flow run Crashed where the Prefect API has it."""
    from tasks.tracking import mlflow_log as ml

    client = ml.client(uri)
    for stale in runs:
        run = client.get_run(stale.run_id)
        if run.info.status != "RUNNING":  # another cleaner was first
            continue
        ml.set_tags(uri, stale.run_id, {"bifocal.error": stale.reason})
        beat = _age_s(run.data.tags.get("bifocal.heartbeat", ""), time.time())
        end_ms = int((time.time() - beat) * 1000) if beat is not None else None
        if end_ms is not None and run.info.start_time and end_ms < run.info.start_time:
            end_ms = None
        client.set_terminated(stale.run_id, status="KILLED", end_time=end_ms)
        stale.ended = True
    with_flow = [s for s in runs if s.ended and s.flow_run_id]
    if prefect and with_flow:
        outcomes = crash_flow_runs({s.flow_run_id: f"MLflow run {s.run_id} {s.reason}"
                                    for s in with_flow if s.flow_run_id})
        for stale in with_flow:
            stale.flow_run = outcomes.get(stale.flow_run_id or "", "")
    return runs


def crash_flow_runs(messages: dict[str, str]) -> dict[str, str]:
    """Set each flow run (id -> message) Crashed unless it already ended; returns what happened
    to each. Uses the current Prefect API: $PREFECT_API_URL, the flow run's own server inside a
    flow, else a temporary server on this machine's Prefect database (PREFECT_HOME)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    outcomes: dict[str, str] = {}
    try:
        with get_client(sync_client=True) as client:
            where = str(client.api_url)
            for flow_run_id, message in messages.items():
                try:
                    flow_run = client.read_flow_run(UUID(flow_run_id))
                except (ObjectNotFound, ValueError):
                    outcomes[flow_run_id] = f"not found on the Prefect API {where}"
                    continue
                state = flow_run.state
                if state is not None and state.is_final():
                    outcomes[flow_run_id] = f"already {state.name}"
                    continue
                client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
                outcomes[flow_run_id] = "marked Crashed"
    except Exception as error:  # noqa: BLE001 - the MLflow side is done; say why not here
        text = f"Prefect API not reachable: {type(error).__name__}: {error}"[:300]
        return {flow_run_id: outcomes.get(flow_run_id, text) for flow_run_id in messages}
    return outcomes


# --- bifocal runs cleanup ----------------------------------------------------------------------

@dataclass
class CleanupReport:
    tracking_uri: str
    dry_run: bool
    runs: list[StaleRun] = field(default_factory=list)
    staging_folders: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        verb = "would end" if self.dry_run else "ended"
        out = [f"MLflow runs left RUNNING by a dead process ({self.tracking_uri}): "
               f"{len(self.runs)}"]
        for run in self.runs:
            out.append(f"  {verb} KILLED: {run.run_id} {run.run_name!r} (experiment "
                       f"{run.experiment!r}): {run.reason}")
            if run.flow_run_id:
                out.append(f"    Prefect flow run {run.flow_run_id}: "
                           f"{run.flow_run or ('would mark Crashed' if self.dry_run else '-')}")
        removed = "would remove" if self.dry_run else "removed"
        out.append(f"stale inference-cache staging folders {removed}: "
                   f"{len(self.staging_folders)}")
        out += [f"  {folder}" for folder in self.staging_folders]
        return out
