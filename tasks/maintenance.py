"""``bifocal runs cleanup``: what a killed process left behind — MLflow runs still RUNNING
(ended KILLED, their Prefect flow runs marked Crashed) and inference-cache staging folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tasks.kinds.cache import STALE_STAGING_S, remove_stale_staging
from tasks.tracking.cleanup import CleanupReport, end_stale_runs, find_stale_runs


def cleanup(uri: str, *, experiments: list[str] | None = None, older_than: float | None = None,
            work_dirs: Sequence[str | Path] = (), dry_run: bool = False,
            prefect: bool = True) -> CleanupReport:
    """End dead RUNNING runs KILLED (their flow runs Crashed) and remove stale staging folders
    of ``work_dir/cache/inference``."""
    report = CleanupReport(uri, dry_run, find_stale_runs(uri, experiments, older_than))
    if not dry_run:
        end_stale_runs(uri, report.runs, prefect=prefect)
    staging_limit = STALE_STAGING_S if older_than is None else older_than
    for work_dir in work_dirs:
        root = Path(work_dir).expanduser() / "cache" / "inference"
        report.staging_folders += [str(p) for p in remove_stale_staging(
            root, staging_limit, dry_run=dry_run)]
    return report
