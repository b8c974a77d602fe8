"""Which process owns a run or a cache folder, and whether it is still alive (Linux /proc,
falling back to ``kill(pid, 0)``). A leaf: used by the inference cache and run tracking."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def host_name() -> str:
    return socket.gethostname() or "localhost"


def pid_namespace() -> str:
    """The PID namespace's inode (Linux): processes of another container on the same host
    name are not this machine's to check by pid. Empty where unknown."""
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").rstrip("]")
    except OSError:
        return ""


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), None where absent."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_started(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from
    the original process; empty where unknown."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def process_alive(pid: int, started: str = "") -> bool:
    """Whether process ``pid`` of this machine is running (a zombie is not); when ``started``
    is given, also that it is the same process (not a later one that reused the pid)."""
    if pid <= 0:
        return False
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return False
        return not started or len(fields) <= 19 or fields[19] == started
    if Path("/proc/self/stat").exists():  # procfs works and has no such process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def same_machine(host: str, namespace: str) -> bool:
    return host == host_name() and namespace == pid_namespace()
