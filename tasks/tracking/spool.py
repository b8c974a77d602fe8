"""A local spool for the results of an MLflow run whose tracking server went away mid-run.

When a logging call (``tasks.tracking.mlflow_log``) still fails to reach the server after
MLflow's own HTTP retries, what it would have sent — metrics, params, tags, tables, artifacts,
dataset inputs and the run's final status — is written under ``<work_dir>/spool/<run_id>/``
instead, and every later call for that run goes there too, so the order is kept. ``bifocal runs
flush`` (``flush``) replays the operations in order once the server is back, ends the run with
its recorded status (``FAILED`` when the writer died before recording one: never ``RUNNING``)
and removes the spool.

Layout::

    spool/<run_id>/meta.json            run id, tracking URI (credentials removed), writer pid
    spool/<run_id>/ops/000001-batch/    op.json (+ table.parquet, files/ for artifacts)
    spool/<run_id>/done/...             operations already sent by an interrupted flush

Every file is written to a temporary name and renamed into place, and an operation's folder is
renamed into ``ops/`` only once complete: a crash never leaves a half operation behind. A flush
moves each operation to ``done/`` right after the server accepted it, so an interrupted flush
resumes without sending anything twice.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tasks.secrets import redact_url

SPOOL = "spool"
DEFAULT_WORK_DIR = ".bifocal/work"  # EvalConfig.work_dir's default
META = "meta.json"
OP = "op.json"
SPOOLED_TAG = "bifocal.spooled"

_roots: dict[str, Path] = {}
_lock = threading.RLock()  # Prefect tasks log from several threads


def spool_root(work_dir: str | Path | None = None) -> Path:
    return Path(work_dir or DEFAULT_WORK_DIR).expanduser().resolve() / SPOOL


def bind(run_id: str, work_dir: str | Path) -> None:
    """Spool ``run_id``'s results under ``work_dir/spool`` (default: ``.bifocal/work``)."""
    with _lock:
        _roots[run_id] = spool_root(work_dir)


def for_run(run_id: str) -> RunSpool:
    with _lock:
        root = _roots.get(run_id) or spool_root()
    return RunSpool(root / run_id)


def write_json(path: Path, data: Any) -> None:
    """Atomically: a temporary file in the same folder, flushed to disk, renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _unreachable_text(uri: str) -> str:
    return redact_url(uri) or uri


class RunSpool:
    """The spooled operations of one run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.run_id = folder.name

    @property
    def work_dir(self) -> Path:
        return self.folder.parent.parent

    def active(self) -> bool:
        """Whether this run's results are being spooled (or wait for a flush)."""
        return (self.folder / META).is_file()

    def meta(self) -> dict[str, Any]:
        return json.loads((self.folder / META).read_text())

    def open(self, tracking_uri: str, reason: str) -> None:
        """Start spooling (idempotent). The URI is stored without credentials."""
        with _lock:
            if self.active():
                return
            shown = _unreachable_text(tracking_uri)
            write_json(self.folder / META, {
                "run_id": self.run_id, "tracking_uri": shown,
                "tracking_uri_redacted": shown != tracking_uri,
                "reason": redact_url(reason[:2000]) or "", "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })

    def _sequence(self) -> int:
        names = [p.name for sub in ("ops", "done") if (self.folder / sub).is_dir()
                 for p in (self.folder / sub).iterdir() if not p.name.startswith(".")]
        return 1 + max((int(name.split("-", 1)[0]) for name in names), default=0)

    def add(self, kind: str, payload: dict[str, Any],
            write_files: Callable[[Path], None] | None = None) -> Path:
        """One operation: its files and ``op.json`` in a hidden folder, renamed into ``ops/``."""
        ops = self.folder / "ops"
        ops.mkdir(parents=True, exist_ok=True)
        staging = ops / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            if write_files is not None:
                write_files(staging)
            write_json(staging / OP, {"kind": kind, **payload})
            with _lock:
                target = ops / f"{self._sequence():06d}-{kind}"
                os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def pending(self) -> list[Path]:
        ops = self.folder / "ops"
        if not ops.is_dir():
            return []
        return sorted(p for p in ops.iterdir() if not p.name.startswith(".")
                      and (p / OP).is_file())

    def final_status(self) -> str | None:
        """The status the run ended with, when the writer got that far."""
        ends = sorted(p for sub in ("ops", "done") if (self.folder / sub).is_dir()
                      for p in (self.folder / sub).iterdir() if p.name.endswith("-end"))
        return json.loads((ends[-1] / OP).read_text())["status"] if ends else None

    def ended(self) -> bool:
        return self.final_status() is not None

    def mark_done(self, op: Path) -> None:
        done = self.folder / "done"
        done.mkdir(exist_ok=True)
        os.rename(op, done / op.name)

    def notice(self) -> str:
        """What to tell the person who ran the evaluation."""
        meta = self.meta()
        return (f"MLflow at {meta['tracking_uri']} was unreachable: the results of run "
                f"{self.run_id} are spooled in {self.folder}; send them once the server is "
                f"back with: bifocal runs flush --work-dir {self.work_dir} "
                f"--tracking-uri {meta['tracking_uri']}")

    # -- writers for the operations of mlflow_log ---------------------------------------------
    def batch(self, metrics: Sequence[Any] = (), params: Sequence[Any] = (),
              tags: Sequence[Any] = ()) -> None:
        self.add("batch", {
            "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
            "params": [[p.key, p.value] for p in params],
            "tags": [[t.key, t.value] for t in tags]})

    def table(self, frame: Any, artifact_file: str) -> None:
        def write(folder: Path) -> None:
            try:
                frame.to_parquet(folder / "table.parquet", index=False)
            except Exception:  # noqa: BLE001 - columns parquet cannot hold: keep them as JSON
                frame.to_json(folder / "table.json", orient="split", index=False)

        self.add("table", {"artifact_file": artifact_file}, write)

    def artifacts(self, folder: Path, artifact_path: str | None) -> None:
        def write(staging: Path) -> None:
            shutil.copytree(folder, staging / "files")

        self.add("artifacts", {"artifact_path": artifact_path}, write)

    def inputs(self, datasets: list[Any]) -> None:
        self.add("inputs", {"datasets": [base64.b64encode(d.to_proto().SerializeToString())
                                         .decode() for d in datasets]})

    def end(self, status: str) -> None:
        self.add("end", {"status": status, "end_time": int(time.time() * 1000)})


def spooled_runs(work_dir: str | Path | None = None) -> list[RunSpool]:
    root = spool_root(work_dir)
    if not root.is_dir():
        return []
    return [RunSpool(p) for p in sorted(root.iterdir()) if (p / META).is_file()]
