"""Crash and resume: ``bifocal run`` killed with SIGKILL at five points, then rerun.

For each kill point a ``bifocal run`` subprocess (``python -m flows.cli run CONFIG``) on a tiny
CLIP and a tiny dataset is killed there; the killed run's MLflow run is then still ``RUNNING``
and its Prefect flow run ``Running``. A rerun to completion (or ``bifocal runs cleanup``) must
end the killed run ``KILLED`` and its flow run ``Crashed``, remove the staging folder left in
the inference cache, reuse the inference shards that were completed, and end with the metrics
of an uninterrupted run.

Test hook, outside production code: the subprocess runs ``python -c HOOK run CONFIG``, where
``HOOK`` calls ``install_kill_hook()`` and then runs ``flows.cli`` as ``__main__`` — the same
``bifocal run`` with one function patched. ``BIFOCAL_TEST_KILL_AT=<point>`` names the point
(``KILL_POINTS``); there the process writes the point into ``$BIFOCAL_TEST_KILL_MARK`` and sends
itself SIGKILL, which cannot be caught: no ``finally``, no ``atexit`` — what ``kill -9``, the
OOM killer or a lost machine do.

``run_crash_check(tmp)`` runs it all (≈12 subprocesses, one minute or two) and returns the
counts for a summary; ``crash_scenarios`` returns the details the tests assert.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import build_tiny_clip

REPO = Path(__file__).resolve().parents[2]
KILL_POINTS = {
    "data": "load-data: rows read, items/rejects tables not yet written",
    "inference": "inference: shard 1 cached; shard 2 written into its staging folder, not yet "
                 "renamed into place",
    "score": "score: per-sample scores written",
    "report": "export-report: report files written, not yet published",
    "tracking": "track-results: metrics and result tags logged on the run, dataset, tables "
                "and artifacts not yet",
}
EXPECTED_CACHE = {"data": "miss", "inference": "partial", "score": "hit", "report": "hit",
                  "tracking": "hit"}
HOOK = ("import runpy; from tests.reliability.crash_check import install_kill_hook; "
        "install_kill_hook(); runpy.run_module('flows.cli', run_name='__main__')")
TIMING_METRICS = ("time_", "wall_time_s", "perf_")  # measurements of this process, not results


# --- the hook (runs inside the killed subprocess) ----------------------------------------------

def _die() -> None:
    mark = os.environ.get("BIFOCAL_TEST_KILL_MARK")
    if mark:
        Path(mark).write_text(json.dumps({"point": os.environ.get("BIFOCAL_TEST_KILL_AT"),
                                          "pid": os.getpid()}))
    os.kill(os.getpid(), signal.SIGKILL)


def _before(function: Callable[..., Any]) -> Callable[..., Any]:
    def patched(*args: Any, **kwargs: Any) -> Any:
        _die()
        return function(*args, **kwargs)
    return patched


def _after(function: Callable[..., Any]) -> Callable[..., Any]:
    def patched(*args: Any, **kwargs: Any) -> Any:
        value = function(*args, **kwargs)
        _die()
        return value
    return patched


def install_kill_hook() -> None:
    """Patch the function at ``$BIFOCAL_TEST_KILL_AT`` (see ``KILL_POINTS``) to SIGKILL the
    process there; nothing when the variable is unset."""
    point = os.environ.get("BIFOCAL_TEST_KILL_AT", "")
    if not point:
        return
    if point not in KILL_POINTS:
        raise SystemExit(f"BIFOCAL_TEST_KILL_AT={point!r}: not one of {sorted(KILL_POINTS)}")
    from flows.settings import apply_defaults

    apply_defaults()  # before Prefect is imported, as flows.cli does
    import tasks.steps as steps
    from tasks.kinds.cache import FolderCache
    from tasks.tracking import mlflow_log

    if point == "data":
        steps.save_dataset = _before(steps.save_dataset)  # type: ignore[attr-defined]
    elif point == "inference":
        put, calls = FolderCache.put, [0]

        def put_second_dies(self: FolderCache, key: str, write: Callable[[Path], None]) -> Path:
            calls[0] += 1
            return put(self, key, _after(write) if calls[0] == 2 else write)

        FolderCache.put = put_second_dies  # type: ignore[method-assign]
    elif point == "score":
        steps.score.fn = _after(steps.score.fn)
    elif point == "report":
        steps.write_report = _after(steps.write_report)  # type: ignore[attr-defined]
    elif point == "tracking":
        mlflow_log.log_dataset = _before(mlflow_log.log_dataset)


# --- the scenarios (run by the test process) ---------------------------------------------------

@dataclass
class Setup:
    tmp: Path
    model_dir: Path
    manifest: Path
    api_url: str

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.tmp / 'mlflow.db'}"

    def config(self, name: str) -> Path:
        """A retrieval config of its own experiment, work dir (cache) and report folder:
        3 inference shards of 4 images."""
        folder = self.tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "config.json"  # JSON is YAML
        path.write_text(json.dumps({
            "task": "retrieval",
            "model": {"path": str(self.model_dir), "batch_size": 4},
            "dataset": {"path": str(self.manifest)},
            "inference": {"shard_size": 4},
            "review": {"size": 4, "seed": 1},
            "report": {"destination": str(folder / "reports")},
            "tracking": {"tracking_uri": self.tracking_uri, "experiment": f"crash-{name}"},
            "work_dir": str(folder / "work"),
        }))
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BIFOCAL_TEST_", "MLFLOW_TRACKING_URI"))}
        env |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                            os.environ.get("PYTHONPATH")])),
                "PREFECT_HOME": str(self.tmp / "prefect-home"),
                "BIFOCAL_HOME": str(self.tmp / "bifocal-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        if self.api_url:
            env["PREFECT_API_URL"] = self.api_url
        return env | extra


def run_process(command: list[str], env: dict[str, str], cwd: Path,
                timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; whatever it leaves running (a temporary
    Prefect server outlives a SIGKILLed parent) is killed with the group afterwards."""
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def bifocal(setup: Setup, *args: str, kill_at: str | None = None,
            mark: Path | None = None) -> subprocess.CompletedProcess:
    extra = {"BIFOCAL_TEST_KILL_AT": kill_at or "", "BIFOCAL_TEST_KILL_MARK": str(mark or "")}
    return run_process([sys.executable, "-c", HOOK, *args], setup.env(**extra), setup.tmp)


def staging_folders(work_dir: Path) -> list[Path]:
    root = work_dir / "cache" / "inference"
    return sorted(p for p in root.glob("*/.*") if p.is_dir()) if root.is_dir() else []


def runs_of(setup: Setup, experiment: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=setup.tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(client.search_runs([found.experiment_id],
                                   order_by=["attributes.start_time ASC"]))


def scored_metrics(run: Any) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if not k.startswith(TIMING_METRICS)}


def metric_history_lengths(setup: Setup, run: Any) -> dict[str, int]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=setup.tracking_uri)
    return {k: len(client.get_metric_history(run.info.run_id, k))
            for k in scored_metrics(run)}


def flow_run_state(flow_run_id: str | None) -> str | None:
    """The flow run's state name on the current Prefect API (None without an id)."""
    if not flow_run_id:
        return None
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
    return state.name if state is not None else None


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def plant_dead_staging(work_dir: Path) -> Path:
    """A staging folder as a killed writer of this machine leaves it (for ``runs cleanup``)."""
    from tasks.kinds.cache import staging_prefix

    key = "ee" * 32
    prefix = staging_prefix(key).replace(f"-{os.getpid()}@", f"-{dead_pid()}@", 1)
    folder = work_dir / "cache" / "inference" / key[:2] / f"{prefix}planted"
    folder.mkdir(parents=True)
    (folder / "image_embeddings.npy").write_bytes(b"half")
    return folder


@dataclass
class PointResult:
    point: str
    killed_rc: int | None = None
    kill_reached: bool = False
    status_after_kill: str | None = None  # of the killed run, before anything cleaned up
    owner_tags: dict[str, str] = field(default_factory=dict)
    staging_after_kill: int = 0
    cleanup_rc: int | None = None  # `bifocal runs cleanup` (tracking point only)
    cleanup_output: str = ""
    rerun_rc: int | None = None
    killed_status: str | None = None  # after the rerun started (or the cleanup)
    killed_error: str = ""
    killed_flow_run_state: str | None = None
    rerun_cache: str | None = None
    metrics_identical: bool = False
    counts_identical: bool = False
    metric_histories: dict[str, int] = field(default_factory=dict)
    finished_runs: int = 0
    staging_after_rerun: int = 0
    log: str = ""  # stderr tails, for failure messages


def counts(run: Any, tracking_uri: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    local = MlflowClient(tracking_uri=tracking_uri).download_artifacts(
        run.info.run_id, "report/report.json")
    return json.loads(Path(local).read_text())["counts"]


def crash_scenarios(setup: Setup, points: list[str] | None = None
                    ) -> tuple[dict[str, Any], list[PointResult]]:
    """An uninterrupted baseline, then each kill point killed and rerun."""
    baseline_process = bifocal(setup, "run", str(setup.config("baseline")))
    if baseline_process.returncode != 0:
        raise RuntimeError(f"baseline run failed:\n{baseline_process.stderr[-4000:]}")
    (baseline,) = runs_of(setup, "crash-baseline")
    reference = {"metrics": scored_metrics(baseline),
                 "counts": counts(baseline, setup.tracking_uri)}
    results = []
    for point in points or list(KILL_POINTS):
        results.append(kill_and_resume(setup, point, reference))
    return reference, results


def kill_and_resume(setup: Setup, point: str, reference: dict[str, Any]) -> PointResult:
    result = PointResult(point)
    config = setup.config(point)
    work = config.parent / "work"
    mark = config.parent / "killed.json"
    killed = bifocal(setup, "run", str(config), kill_at=point, mark=mark)
    result.killed_rc, result.kill_reached = killed.returncode, mark.exists()
    result.log = f"killed run stderr:\n{killed.stderr[-3000:]}"
    runs = runs_of(setup, f"crash-{point}")
    if len(runs) != 1:
        return result
    killed_run = runs[0]
    result.status_after_kill = killed_run.info.status
    result.owner_tags = {k: v for k, v in killed_run.data.tags.items()
                         if k.startswith(("bifocal.pid", "bifocal.host", "bifocal.heartbeat"))}
    result.staging_after_kill = len(staging_folders(work))
    if point == "tracking":  # ended by the command, not by the rerun's start
        plant_dead_staging(work)
        cleanup = bifocal(setup, "runs", "cleanup", "--experiment", f"crash-{point}",
                          "--tracking-uri", setup.tracking_uri, "--work-dir", str(work))
        result.cleanup_rc, result.cleanup_output = cleanup.returncode, cleanup.stdout
        result.log += f"\ncleanup stderr:\n{cleanup.stderr[-2000:]}"
    rerun = bifocal(setup, "run", str(config))
    result.rerun_rc = rerun.returncode
    result.log += f"\nrerun stderr:\n{rerun.stderr[-3000:]}"
    runs = {run.info.run_id: run for run in runs_of(setup, f"crash-{point}")}
    after = runs[killed_run.info.run_id]
    result.killed_status = after.info.status
    result.killed_error = after.data.tags.get("bifocal.error", "")
    result.killed_flow_run_state = flow_run_state(after.data.tags.get("prefect.flow_run_id"))
    finished = [run for run in runs.values() if run.info.status == "FINISHED"]
    result.finished_runs = len(finished)
    result.staging_after_rerun = len(staging_folders(work))
    if len(finished) == 1:
        (rerun_run,) = finished
        result.rerun_cache = rerun_run.data.tags.get("bifocal.inference_cache")
        result.metrics_identical = scored_metrics(rerun_run) == reference["metrics"]
        result.counts_identical = counts(rerun_run, setup.tracking_uri) == reference["counts"]
        result.metric_histories = metric_history_lengths(setup, rerun_run)
    return result


def left_running(setup: Setup) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=setup.tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids, "attributes.status = 'RUNNING'"))


def summary(setup: Setup, results: list[PointResult]) -> dict[str, int]:
    return {
        "kill_points": sum(r.kill_reached and r.killed_rc == -signal.SIGKILL
                           and r.status_after_kill == "RUNNING" for r in results),
        "resumed_identical": sum(r.rerun_rc == 0 and r.metrics_identical and r.counts_identical
                                 and r.rerun_cache == EXPECTED_CACHE[r.point]
                                 and r.killed_status == "KILLED" for r in results),
        "left_running": left_running(setup),
        "stale_folders": sum(len(staging_folders(setup.tmp / r.point / "work"))
                             for r in results),
    }


def run_crash_check(tmp: Path, model_dir: Path | None = None,
                    api_url: str | None = None) -> dict[str, int]:
    """{"kill_points": n, "resumed_identical": m, "left_running": k, "stale_folders": s}:
    kill points reached (SIGKILL, run left RUNNING), reruns that ended the killed run KILLED and
    matched the uninterrupted run (metrics, counts, expected cache reuse), runs still RUNNING
    in the store, staging folders left. Starts a temporary Prefect server unless ``api_url``."""
    from flows.settings import apply_defaults

    apply_defaults()
    tmp = Path(tmp)
    from tests.helpers import write_dataset

    model_dir = model_dir or build_tiny_clip(tmp / "tiny-clip")
    manifest = write_dataset(tmp / "ds", n=12)
    if api_url:
        return _checked(Setup(tmp, model_dir, manifest, api_url))
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        return _checked(Setup(tmp, model_dir, manifest, str(PREFECT_API_URL.value())))


def _checked(setup: Setup) -> dict[str, int]:
    """Run the scenarios; the details (with stderr tails) go to ``tmp/crash_check.json``."""
    reference, results = crash_scenarios(setup)
    counts = summary(setup, results)
    (setup.tmp / "crash_check.json").write_text(json.dumps(
        {"summary": counts, "reference": reference, "points": [asdict(r) for r in results]},
        indent=1, default=str))
    return counts


if __name__ == "__main__":  # python -m tests.reliability.crash_check [KEEP_DIR]
    import tempfile

    if len(sys.argv) > 1:
        print(json.dumps(run_crash_check(Path(sys.argv[1]))))
    else:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(run_crash_check(Path(folder))))
