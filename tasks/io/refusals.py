"""One wording for a file that could not be read, whatever the caller's error type."""

from __future__ import annotations

from tasks.io.images import FileRefused, error_text


def read_problem(error: OSError | FileRefused, what: str, name: str) -> str:
    """``<what> not found: <name>``, ``<what> <name> <refusal>`` (a FIFO, too large, ...) or
    ``cannot read <what> <name>: <reason>``."""
    if isinstance(error, FileNotFoundError):
        return f"{what} not found: {name}"
    if isinstance(error, FileRefused):
        return f"{what} {name} {error}"
    return f"cannot read {what} {name}: {error_text(error)}"
