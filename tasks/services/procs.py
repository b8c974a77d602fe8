"""Processes of the stack, on loopback.

**Protocol.** A service is started with ``spawn``: its own session and process group
(``start_new_session=True``, so the group id is the leader's pid), stdin from /dev/null,
stdout and stderr to its log file. It is stopped group-wise with ``stop_groups``: SIGTERM to
every group, SIGKILL to what is left after the timeout. A leader is identified by pid *and*
start time (``tasks.processes``), so a reused pid is never signalled; group members that outlive
their leader are still found (a pid that is some group's id is not reused while the group
lives). Health is an HTTP answer (``http_ok``), proxies bypassed. Error messages quote the tail
of a log with the stack's secrets and any URL credentials masked (``log_tail``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.processes import process_alive
from tasks.secrets import MASK, redact_text

LOOPBACK = "127.0.0.1"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServiceError(RuntimeError):
    """A service of the stack could not be started, checked or stopped: names the service
    and quotes the (redacted) tail of its log."""

    def __init__(self, service: str, problem: str, tail: str = "", log: str = "") -> None:
        self.service, self.problem, self.tail, self.log = service, problem, tail, log
        message = f"{service}: {problem}"
        if tail:
            message += f"\n--- last lines of {log or 'its log'} ---\n{tail}"
        super().__init__(message)


# ------------------------------------------------------------------------------------- ports


def free_ports(names: Sequence[str], preferred: Mapping[str, int] | None = None,
               linked: Mapping[str, tuple[str, int]] | None = None) -> dict[str, int]:
    """A distinct free loopback port per name; a ``preferred`` port is kept when it is free
    (the stack keeps its URLs from one ``up`` to the next). ``linked`` maps a name to
    ``(base name, offset)``: its port is the base's plus the offset (a server that derives
    one port from another)."""
    preferred, linked = preferred or {}, linked or {}
    held: dict[str, socket.socket] = {}
    try:
        for name, (base, offset) in linked.items():
            held[base], held[name] = _bound_pair(preferred.get(base, 0), offset, _ports(held))
        for name in names:
            if name not in held:
                held[name] = _bound(preferred.get(name, 0), _ports(held))
        return _ports_by_name(held)
    finally:
        for sock in held.values():
            sock.close()


def _ports_by_name(held: Mapping[str, socket.socket]) -> dict[str, int]:
    return {name: sock.getsockname()[1] for name, sock in held.items()}


def _ports(held: Mapping[str, socket.socket]) -> set[int]:
    return set(_ports_by_name(held).values())


def _bound(port: int, taken: set[int]) -> socket.socket:
    """A socket bound to ``port`` on loopback when a server could listen there (a port with
    connections in TIME_WAIT is free: SO_REUSEADDR, as servers set it), else to a free port
    the kernel picks (never one of ours: those are bound)."""
    if port and port not in taken:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
            return sock
        except OSError:
            sock.close()
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    return sock


def _bound_pair(port: int, offset: int, taken: set[int],
                tries: int = 100) -> tuple[socket.socket, socket.socket]:
    """Two sockets bound to free ports ``p`` and ``p + offset`` (``port`` first, if free)."""
    for candidate in [port, *[0] * tries]:
        first = _bound(candidate, taken)
        second = _bound_exactly(first.getsockname()[1] + offset, taken)
        if second is not None:
            return first, second
        first.close()
    raise OSError(f"no two free loopback ports {offset} apart")


def _bound_exactly(port: int, taken: set[int]) -> socket.socket | None:
    if port > 65535 or port in taken:
        return None
    sock = socket.socket()
    try:
        sock.bind((LOOPBACK, port))
    except OSError:
        sock.close()
        return None
    return sock


def listening(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


# -------------------------------------------------------------------------------------- HTTP


def http_json(url: str, body: Any = None, timeout: float = 3.0) -> tuple[int, Any]:
    """(status, parsed JSON or text) of a GET (or a POST of ``body`` as JSON); status 0 when
    nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, _parsed(response.read())
    except urllib.error.HTTPError as error:
        return error.code, _parsed(error.read())
    except (OSError, ValueError):
        return 0, None


def _parsed(raw: bytes) -> Any:
    text = raw.decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def http_ok(url: str, timeout: float = 3.0) -> bool:
    return http_json(url, timeout=timeout)[0] == 200


# --------------------------------------------------------------------------------- processes


def spawn(argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start ``argv`` in a new session (its own process group), output to ``log``
    (overwritten)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=dict(env), cwd=cwd,
                                start_new_session=True)


def wait_until(check: Callable[[], bool], process: subprocess.Popen, timeout: float,
               fail: Callable[[str], ServiceError]) -> None:
    """Poll ``check`` until it holds; ``fail(problem)`` is raised when the process exits or
    the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise fail(f"exited with code {process.returncode} while starting")
        if check():
            return
        time.sleep(0.5)
    raise fail(f"not healthy after {timeout:.0f} s")


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid`` (Linux /proc; elsewhere the
    leader alone, if the group answers signal 0)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return [pgid] if _group_answers(pgid) else []
    return [int(entry.name) for entry in proc.iterdir()
            if entry.name.isdigit() and _in_group(entry, pgid)]


def _in_group(entry: Path, pgid: int) -> bool:
    try:
        text = (entry / "stat").read_text()
    except OSError:
        return False
    fields = text[text.rfind(")") + 2:].split()  # state, ppid, pgrp, session, ...
    return len(fields) > 2 and fields[0] not in ("Z", "X") and fields[2] == str(pgid)


def _group_answers(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owned_group(pid: int, started: str) -> bool:
    """Whether the group led by ``pid`` is still ours to signal: its leader is the very
    process we started, or the leader is gone and members of its group are left."""
    if process_alive(pid, started):
        return True
    return not process_alive(pid) and bool(group_members(pid))


def stop_groups(leaders: Iterable[tuple[int, str]], timeout: float = 20.0) -> list[int]:
    """SIGTERM the process groups of ``(pid, start time)`` leaders (ours only), SIGKILL
    those left after ``timeout``; returns the groups still alive after that (none, normally).
    Stopping a group that is already gone is not an error."""
    groups = [pid for pid, started in leaders if owned_group(pid, started)]
    _signal_all(groups, signal.SIGTERM)
    left = _wait_gone(groups, timeout)
    _signal_all(left, signal.SIGKILL)
    return _wait_gone(left, 5.0)


def _signal_all(groups: Iterable[int], signum: int) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


def _wait_gone(groups: list[int], timeout: float) -> list[int]:
    """The groups that still have live members after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for pgid in groups:
            _reap(pgid)
        left = [pgid for pgid in groups if group_members(pgid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def _reap(pid: int) -> None:
    """Reap ``pid`` if it is our own exited child, so that no zombie is left behind."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


# -------------------------------------------------------------------------------------- logs


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***`` and URL credentials removed."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return redact_text(text)


def log_tail(log: Path, secrets: Iterable[str], lines: int = 25) -> str:
    """The last ``lines`` lines of a log, secrets masked; empty when there is no log."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return redact_secrets("\n".join(text.rstrip().splitlines()[-lines:]), secrets)
