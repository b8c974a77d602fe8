"""``up``, ``down``, ``status`` and ``environment`` of a team's stack on loopback.

**up** starts, each healthy before the next: the S3 server (bucket ``bifocal``), the
PostgreSQL databases (created when missing), the Prefect server, the MLflow server (artifacts
proxied to ``s3://bifocal/mlflow``, checked by listing them), the work pool ``bifocal``
(created when missing) and its process worker (healthy once it has polled). After each
service, state.json records it; a failure stops what this ``up`` started, removes state.json and
raises ServiceError naming the service with the redacted tail of its log (KeyboardInterrupt
cleans up too). A stack that is fully up is left alone (``already``); one that is partly down
is stopped and started again (``restarted`` names what was down).

**down** SIGTERMs every group of state.json, SIGKILLs what is left after 20 s, then checks
that no process of theirs is alive and none of the ports of the services that were running
listens, and removes state.json. A service that had already stopped is fine; nothing to stop
is fine.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import tasks.services.postgres as postgres
import tasks.services.specs as specs
from tasks.processes import process_alive, process_started
from tasks.services.procs import (
    LOOPBACK,
    ServiceError,
    free_ports,
    http_json,
    http_ok,
    listening,
    log_tail,
    owned_group,
    redact_secrets,
    spawn,
    stop_groups,
    wait_until,
)
from tasks.services.specs import (
    BUCKET,
    LINKED_PORTS,
    POOL,
    PORTS,
    S3_PORTS,
    WORKER_NAME,
    Options,
    Plan,
)
from tasks.services.state import (
    Layout,
    Service,
    State,
    credentials,
    locked,
    read_credentials,
    read_ports,
    read_state,
    remove_state,
    write_ports,
    write_state,
)

SERVICES = ("s3", "prefect", "mlflow", "worker")
STOP_TIMEOUT = 20.0
Progress = Callable[[str], None]


@dataclass(frozen=True)
class UpReport:
    state: State
    already: bool
    seconds: float
    restarted: tuple[str, ...] = ()


@dataclass(frozen=True)
class DownReport:
    stopped: tuple[str, ...]
    already_stopped: tuple[str, ...]
    seconds: float

    @property
    def nothing(self) -> bool:
        return not self.stopped and not self.already_stopped


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    url: str
    healthy: bool | None  # None: not checked (not running)


# ---------------------------------------------------------------------------------------- up


def up(options: Options, progress: Progress | None = None) -> UpReport:
    """Start the stack in ``options.dir`` (see the module docstring); ``progress`` receives
    one line per service as it becomes healthy."""
    layout = Layout(options.dir)
    with locked(layout):
        current = read_state(layout)
        if current is not None and current.complete and not _not_running(current):
            return UpReport(current, already=True, seconds=0.0)
        restarted = _clear(layout, current)
        return _start(options, layout, progress or (lambda line: None), restarted)


def _not_running(state: State) -> tuple[str, ...]:
    running = {s.name for s in state.services if process_alive(s.pid, s.started)}
    return tuple(name for name in SERVICES if name not in running)


def _clear(layout: Layout, current: State | None) -> tuple[str, ...]:
    """Stop what a partial or broken stack left running; the services that were down."""
    if current is None:
        return ()
    down = _not_running(current)
    _stop(current.services)
    remove_state(layout)
    return down


def _start(options: Options, layout: Layout, progress: Progress,
           restarted: tuple[str, ...]) -> UpReport:
    began = time.monotonic()
    ports = free_ports(PORTS, read_ports(layout), LINKED_PORTS)
    plan = Plan(options, layout, ports, credentials(layout))
    write_ports(layout, plan.ports)
    services: list[Service] = []
    try:
        for step in STEPS:
            _run_step(plan, step, services, progress)
    except BaseException:
        _abort(layout, services)
        raise
    seconds = round(time.monotonic() - began, 1)
    state = _state(plan, services, complete=True, seconds=seconds)
    write_state(layout, state)
    return UpReport(state, already=False, seconds=seconds, restarted=restarted)


def _run_step(plan: Plan, step: Callable[[Plan], Service | None], services: list[Service],
              progress: Progress) -> None:
    began = time.monotonic()
    service = step(plan)
    if service is not None:
        services.append(service)
        write_state(plan.layout, _state(plan, services, complete=False))
    name = service.name if service else step.__name__.strip("_")
    where = f" ({service.url})" if service else ""
    progress(f"{name}: ready in {time.monotonic() - began:.1f} s{where}")


def _state(plan: Plan, services: Sequence[Service], complete: bool,
           seconds: float | None = None) -> State:
    return State(services=tuple(services), options=plan.options.to_json(), complete=complete,
                 up_seconds=seconds)


def _abort(layout: Layout, services: Sequence[Service]) -> None:
    """Stop what a failed ``up`` started; state.json stays only if something survived."""
    if not stop_groups([(s.pid, s.started) for s in reversed(services)], STOP_TIMEOUT):
        remove_state(layout)


def _launch(plan: Plan, name: str, argv: list[str], env: dict[str, str], *, cwd: Path,
            ports: Sequence[str], url: str, health: str,
            ready: Callable[[float], bool]) -> Service:
    """Spawn a service, wait until ``ready(spawned_at)``; stop it and raise ServiceError
    (with its log's tail) when it exits or is not ready in time."""
    log = plan.layout.log(name)
    spawned_at = time.time()
    process = spawn(argv, env, cwd, log)
    service = Service(name, process.pid, process_started(process.pid), url, health,
                      tuple(plan.ports[p] for p in ports), str(log))
    try:
        wait_until(lambda: ready(spawned_at), process, plan.options.timeout,
                   lambda problem: failure(plan, name, problem))
    except BaseException:
        stop_groups([(service.pid, service.started)], STOP_TIMEOUT)
        raise
    return service


def failure(plan: Plan, name: str, problem: str, log_name: str | None = None) -> ServiceError:
    """ServiceError for ``name`` quoting its log's tail with the stack's keys masked."""
    log = plan.layout.log(log_name or name)
    return ServiceError(name, redact_secrets(problem, plan.keys.values()),
                        log_tail(log, plan.keys.values()), str(log))


# ------------------------------------------------------------------------------------- steps


def _s3(plan: Plan) -> Service:
    url = plan.url("s3")
    return _launch(plan, "s3", specs.s3_command(plan), specs.s3_env(plan), cwd=plan.layout.root,
                   ports=S3_PORTS, url=url, health=f"{url}/healthz",
                   ready=lambda _: _bucket_ready(plan))


def _bucket_ready(plan: Plan) -> bool:
    """The S3 API answers with the stack's keys and the bucket exists (created if not)."""
    if not http_ok(f"{plan.url('s3')}/healthz"):
        return False
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.session.Session().client(
        "s3", endpoint_url=plan.url("s3"), region_name=specs.REGION,
        aws_access_key_id=plan.keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=plan.keys["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=3, read_timeout=10))
    try:
        if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=BUCKET)
    except (BotoCoreError, ClientError):
        return False
    return True


def _postgres(plan: Plan) -> None:
    postgres.ensure_databases(plan.options)


def _prefect(plan: Plan) -> Service:
    url = plan.url("prefect")
    return _launch(plan, "prefect", specs.prefect_command(plan), specs.prefect_env(plan),
                   cwd=plan.layout.root, ports=("prefect",), url=url,
                   health=f"{url}/api/health", ready=lambda _: http_ok(f"{url}/api/health"))


def _mlflow(plan: Plan) -> Service:
    url = plan.url("mlflow")
    return _launch(plan, "mlflow", specs.mlflow_command(plan), specs.mlflow_env(plan),
                   cwd=plan.layout.root, ports=("mlflow",), url=url, health=f"{url}/health",
                   ready=lambda _: http_ok(f"{url}/health") and _artifacts_reachable(plan))


def _artifacts_reachable(plan: Plan) -> bool:
    """MLflow lists its proxied artifact store (s3://bifocal/mlflow): a 200 proves its S3
    endpoint and keys; no answer yet (a busy machine) is waited for, an error answer fails at
    once."""
    status, body = http_json(f"{plan.url('mlflow')}/api/2.0/mlflow-artifacts/artifacts",
                             timeout=20)
    if status == 0:
        return False
    if status != 200:
        text = " ".join(str(body).split())[:300]
        raise failure(plan, "mlflow", f"cannot list its artifact store s3://{BUCKET}/mlflow "
                      f"(HTTP {status}: {text})")
    return True


def _worker(plan: Plan) -> Service:
    _ensure_pool(plan)
    url = plan.url("worker")
    return _launch(plan, "worker", specs.worker_command(), specs.worker_env(plan),
                   cwd=plan.options.repo, ports=("worker",), url=url, health=f"{url}/health",
                   ready=lambda since: _worker_polling(plan, since))


def _ensure_pool(plan: Plan) -> None:
    """Create the process work pool unless it exists (an existing one is left as it is)."""
    api = f"{plan.url('prefect')}/api"
    if http_json(f"{api}/work_pools/{POOL}")[0] == 200:
        return
    import subprocess

    log = plan.layout.log("work-pool")
    with log.open("wb") as out:
        code = subprocess.call(specs.pool_command(), env=specs.client_env(plan),
                               cwd=plan.layout.root, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, timeout=plan.options.timeout)
    if code != 0 or http_json(f"{api}/work_pools/{POOL}")[0] != 200:
        raise failure(plan, "work pool", f"`prefect work-pool create {POOL}` failed "
                      f"(exit {code})", log_name="work-pool")


def _worker_polling(plan: Plan, since: float) -> bool:
    """The worker is ONLINE in the pool with a heartbeat after it was started."""
    status, workers = http_json(f"{plan.url('prefect')}/api/work_pools/{POOL}/workers/filter",
                                body={})
    if status != 200 or not isinstance(workers, list):
        return False
    return any(w.get("name") == WORKER_NAME and w.get("status") == "ONLINE"
               and _timestamp(w.get("last_heartbeat_time")) >= since for w in workers)


def _timestamp(text: str | None) -> float:
    if not text:
        return 0.0
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


STEPS: tuple[Callable[[Plan], Service | None], ...] = (_s3, _postgres, _prefect, _mlflow,
                                                       _worker)


# -------------------------------------------------------------------------------------- down


def down(directory: Path | str) -> DownReport:
    """Stop the stack in ``directory`` (see the module docstring)."""
    layout = Layout(directory)
    if not layout.state.exists():
        return DownReport((), (), 0.0)
    with locked(layout):
        state = read_state(layout)
        if state is None:
            return DownReport((), (), 0.0)
        began = time.monotonic()
        running = [s for s in state.services if owned_group(s.pid, s.started)]
        _stop(state.services)
        _check_ports_closed(running)
        remove_state(layout)
    stopped = tuple(s.name for s in running)
    return DownReport(stopped, tuple(s.name for s in state.services if s.name not in stopped),
                      round(time.monotonic() - began, 1))


def _stop(services: Sequence[Service]) -> None:
    """Stop the services' groups, the last started first; ServiceError if any survives."""
    left = set(stop_groups([(s.pid, s.started) for s in reversed(services)], STOP_TIMEOUT))
    if survivors := [s for s in services if s.pid in left]:
        names = ", ".join(f"{s.name} (process group {s.pid})" for s in survivors)
        raise ServiceError("stack", f"still running after SIGKILL: {names}")


def _check_ports_closed(services: Sequence[Service], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    ports = [(s.name, port) for s in services for port in s.ports]
    while open_ports := [(name, port) for name, port in ports if listening(port)]:
        if time.monotonic() > deadline:
            listed = ", ".join(f"{port} ({name})" for name, port in open_ports)
            raise ServiceError("stack", f"ports still listening after stop: {listed}")
        time.sleep(0.2)


# ------------------------------------------------------------------------------ status & env


def status(directory: Path | str) -> list[ServiceStatus]:
    """Per service: running (the recorded process is alive), pid, URL, health (its HTTP
    check answers 200); then PostgreSQL (its port answers)."""
    state = read_state(Layout(directory))
    rows = [_service_status(name, state.service(name) if state else None) for name in SERVICES]
    return [*rows, _postgres_status(state)]


def _service_status(name: str, service: Service | None) -> ServiceStatus:
    if service is None:
        return ServiceStatus(name, False, None, "-", None)
    running = process_alive(service.pid, service.started)
    return ServiceStatus(name, running, service.pid, service.url,
                         http_ok(service.health) if running else None)


def _postgres_status(state: State | None) -> ServiceStatus:
    recorded = state.options if state else {}
    options = Options(db_prefix=str(recorded.get("db_prefix", "bifocal")),
                      pg_host=str(recorded.get("pg_host", LOOPBACK)),
                      pg_port=int(recorded.get("pg_port", 5432)),
                      pg_user=str(recorded.get("pg_user", "postgres")))
    reachable = listening(options.pg_port, options.pg_host)
    return ServiceStatus("postgres", reachable, None,
                         options.pg_url("{prefect,mlflow}"), reachable)


def environment(directory: Path | str) -> dict[str, str]:
    """The variables a user needs for the running stack (S3 keys included)."""
    layout = Layout(directory)
    state = read_state(layout)
    if state is None or not state.complete:
        raise ServiceError("stack", f"no stack is up in {layout.root}: run "
                           "`bifocal services up` first")
    urls = {s.name: s.url for s in state.services}
    return specs.user_env(urls["s3"], urls["prefect"], urls["mlflow"], read_credentials(layout))


def export_lines(env: dict[str, str]) -> list[str]:
    """``export K=V`` lines, values shell-quoted (for ``eval``)."""
    return [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
