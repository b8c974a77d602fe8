"""What a stack keeps in its folder (``--dir``, default ``.bifocal/services``).

**Layout.** ``state.json``: one record per running service (pid, start time, ports, URL,
health URL, log) and the stack's options, no secret; written after each service is healthy,
``complete`` once all are, removed by ``down``. ``env`` (mode 0600): the S3 access and secret
keys, generated once and kept, so the data under ``s3/`` stays readable. ``ports.json``: the
ports of the last ``up``, reused when free. ``logs/<service>.log``, ``prefect/`` (the Prefect
server's and worker's PREFECT_HOME), ``lock`` (one ``up``/``down`` at a time). The folder
is created 0700.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.services.procs import ServiceError

STATE_VERSION = 1
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class Service:
    """A running service: its process group leader and where it answers."""

    name: str
    pid: int
    started: str  # the leader's start time (clock ticks since boot), tells a reused pid
    url: str
    health: str
    ports: tuple[int, ...]
    log: str


@dataclass(frozen=True)
class State:
    services: tuple[Service, ...]
    options: dict[str, Any]
    complete: bool = False
    up_seconds: float | None = None
    version: int = field(default=STATE_VERSION)

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)


class Layout:
    """The paths of one stack folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()
        self.state = self.root / "state.json"
        self.env = self.root / "env"
        self.ports = self.root / "ports.json"
        self.lock = self.root / "lock"
        self.logs = self.root / "logs"
        self.s3_data = self.root / "s3"
        self.prefect_home = self.root / "prefect"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def create(self) -> None:
        """The folder (0700 when this creates it) and its sub-folders."""
        if not self.root.exists():
            self.root.mkdir(parents=True, mode=0o700)
        for folder in (self.logs, self.s3_data, self.prefect_home):
            folder.mkdir(exist_ok=True)


# -------------------------------------------------------------------------------------- state


def read_state(layout: Layout) -> State | None:
    """The stack's state, None when there is none (never started, or stopped)."""
    try:
        data = json.loads(layout.state.read_text())
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise ServiceError("state", f"{layout.state} is not valid JSON ({error}); stop the "
                           "processes it names by hand and remove it") from None
    services = tuple(Service(**{**s, "ports": tuple(s["ports"])}) for s in data.pop("services"))
    return State(services=services, **data)


def write_state(layout: Layout, state: State) -> None:
    """Replace state.json atomically."""
    _write_atomic(layout.state, json.dumps(asdict(state), indent=2) + "\n", 0o644)


def remove_state(layout: Layout) -> None:
    layout.state.unlink(missing_ok=True)


def read_ports(layout: Layout) -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in json.loads(layout.ports.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def write_ports(layout: Layout, ports: dict[str, int]) -> None:
    _write_atomic(layout.ports, json.dumps(ports, indent=2) + "\n", 0o644)


def _write_atomic(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to a temporary file created with ``mode``, then rename it over
    ``path`` (a secret never sits in a file with a wider mode, not even briefly)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    os.replace(temporary, path)


# -------------------------------------------------------------------------------- credentials


def credentials(layout: Layout) -> dict[str, str]:
    """The S3 keys of the stack: read from ``env`` (made 0600 if it was wider), generated
    with ``secrets.token_hex`` and written there (0600) the first time."""
    if layout.env.exists():
        layout.env.chmod(0o600)
        return read_credentials(layout)
    keys = {"AWS_ACCESS_KEY_ID": secrets.token_hex(10),
            "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20)}
    _write_atomic(layout.env, "".join(f"{k}={v}\n" for k, v in keys.items()), 0o600)
    return keys


def read_credentials(layout: Layout) -> dict[str, str]:
    """The keys from ``env``; an error naming the file (never a value) when one is missing."""
    try:
        lines = layout.env.read_text().splitlines()
    except FileNotFoundError:
        raise ServiceError("s3", f"no credentials file {layout.env}: run `up` first") from None
    pairs = dict(line.split("=", 1) for line in lines if "=" in line)
    keys = {key: pairs.get(key, "").strip() for key in CREDENTIAL_KEYS}
    if missing := [key for key, value in keys.items() if not value]:
        raise ServiceError("s3", f"{layout.env} lacks {', '.join(missing)}")
    return keys


# --------------------------------------------------------------------------------------- lock


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Hold the stack's lock (one ``up``/``down`` at a time); an error when another holds it."""
    layout.create()
    with layout.lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServiceError("stack", f"another `bifocal services` command is working on "
                               f"{layout.root}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
