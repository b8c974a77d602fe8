"""SIGKILL ``bifocal run`` at five points, rerun to completion: same metrics as an uninterrupted
run, the killed MLflow run ended KILLED and its Prefect flow run Crashed, completed inference
shards reused, no staging folder left (tests/reliability/crash_check.py has the hook)."""

import signal
from pathlib import Path

import pytest

from tests.helpers import write_dataset
from tests.reliability.crash_check import (
    EXPECTED_CACHE,
    KILL_POINTS,
    Setup,
    crash_scenarios,
    summary,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_killed_runs_resume_with_identical_metrics_and_nothing_left(
        prefect_harness, tiny_clip_dir: Path, tmp_path: Path):
    from prefect.settings import PREFECT_API_URL

    setup = Setup(tmp_path, tiny_clip_dir, write_dataset(tmp_path / "ds", n=12),
                  str(PREFECT_API_URL.value()))
    reference, results = crash_scenarios(setup)  # 1 + 5 × 2 `bifocal run` + 1 cleanup

    assert reference["counts"]["items"] == 12 and reference["metrics"]["i2t_recall_at_1"] >= 0
    assert [r.point for r in results] == list(KILL_POINTS)
    for r in results:
        why = f"{r.point}:\n{r.log}"
        # killed where the hook says, and left behind what a SIGKILL leaves behind
        assert r.killed_rc == -signal.SIGKILL and r.kill_reached, why
        assert r.status_after_kill == "RUNNING", why
        assert set(r.owner_tags) >= {"bifocal.pid", "bifocal.host", "bifocal.heartbeat"}, why
        assert r.staging_after_kill == (1 if r.point == "inference" else 0), why
        # the rerun (or the cleanup command) closed the killed run ...
        assert r.rerun_rc == 0, why
        assert r.killed_status == "KILLED", why
        assert r.killed_error == (f"killed: process {r.owner_tags['bifocal.pid']}@"
                                  f"{r.owner_tags['bifocal.host']} ended without closing the "
                                  "run"), why
        assert r.killed_flow_run_state == "Crashed", why
        # ... and resumed: cached shards reused, same numbers, nothing counted twice
        assert r.rerun_cache == EXPECTED_CACHE[r.point], why
        assert r.metrics_identical and r.counts_identical, why
        assert r.finished_runs == 1 and set(r.metric_histories.values()) == {1}, why
        assert r.staging_after_rerun == 0, why
    (tracking,) = [r for r in results if r.point == "tracking"]
    assert tracking.cleanup_rc == 0, tracking.log
    assert "ended KILLED" in tracking.cleanup_output
    assert "marked Crashed" in tracking.cleanup_output
    assert "staging folders removed: 1" in tracking.cleanup_output
    assert summary(setup, results) == {"kill_points": 5, "resumed_identical": 5,
                                       "left_running": 0, "stale_folders": 0}
