"""Assemble the report folder: report.json, per-sample tables, review sample and report.html."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import ReportFormat

REPORT_VERSION = 1


def write_report(
    folder: Path,
    report: dict[str, Any],
    per_sample: pd.DataFrame,
    extra_tables: dict[str, str],
    review_dir: Path | None,
    rejects: pd.DataFrame,
    formats: list[ReportFormat],
    files: dict[str, str] | None = None,
) -> list[Path]:
    """Write every requested format into ``folder``; return the written files. ``files`` are
    further report files (name -> path, e.g. confusion_matrix.csv), copied and plotted."""
    from tasks.report.html import render

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    report = {"report_version": REPORT_VERSION, **report}
    if ReportFormat.json in formats:
        written.append(_write_text(folder / "report.json", json.dumps(report, indent=2,
                                                                      default=str)))
    if ReportFormat.parquet in formats:
        per_sample.to_parquet(folder / "per_sample.parquet", index=False)
        written.append(folder / "per_sample.parquet")
        for name, path in extra_tables.items():
            target = folder / f"per_sample_{name}.parquet"
            shutil.copyfile(path, target)
            written.append(target)
    for name, path in (files or {}).items():
        written.append(Path(shutil.copyfile(path, folder / name)))
    if ReportFormat.csv in formats:
        written.append(_csv(per_sample, folder / "per_sample.csv"))
    if len(rejects):
        written.append(_csv(rejects, folder / "rejects.csv"))
    if review_dir is not None and review_dir.is_dir() and any(review_dir.iterdir()):
        target = folder / "review"
        if review_dir.resolve() != target.resolve():
            shutil.copytree(review_dir, target, dirs_exist_ok=True)
        written += sorted(p for p in target.rglob("*") if p.is_file())
    if ReportFormat.html in formats:
        written.append(_write_text(folder / "report.html",
                                   render(report, per_sample, files)))
    return written


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    out = frame.copy()
    for column in out.columns:
        if out[column].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            out[column] = out[column].map(lambda v: json.dumps(list(v), default=str)
                                          if hasattr(v, "__len__") and not isinstance(v, str)
                                          else v)
    out.to_csv(path, index=False)
    return path
