"""From scored items to the review queue on disk: sample (``review.strategies``), shape the
queue, write it in every configured format plus ``review.json``, the manifest the ingest reads
(run, task, rating schema, statistics settings, metric directions, slice columns)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import EvalConfig
from tasks.review.export import write_queue
from tasks.review.queue import build_queue
from tasks.review.sampling import select_for_review

MANIFEST_FILE = "review.json"


@dataclass
class ReviewQueue:
    """What the review step hands on: the queue folder and what it holds."""

    folder: str
    files: dict[str, str] = field(default_factory=dict)  # name -> path
    size: int = 0
    strategies: dict[str, int] = field(default_factory=dict)  # strategy -> items
    warnings: list[str] = field(default_factory=list)

    @property
    def sample_path(self) -> Path:
        return Path(self.folder) / "sample.parquet"


@dataclass(frozen=True)
class ReviewInputs:
    """The scored run as the review step sees it."""

    per_sample: pd.DataFrame
    items: pd.DataFrame
    row_key: str
    review_column: str
    worst_is_high: bool
    higher_is_better: dict[str, bool]
    review_texts: tuple[tuple[str, str], ...]


def with_metadata(per_sample: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Per-sample rows plus the item columns they lack (metadata to stratify and slice by)."""
    missing = [c for c in items.columns if c not in per_sample.columns]
    if not missing or "item_id" not in per_sample.columns:
        return per_sample
    return per_sample.merge(items[["item_id", *missing]], on="item_id", how="left")


def prepare_review(inputs: ReviewInputs, config: EvalConfig, run_id: str, folder: Path,
                   title: str) -> ReviewQueue:
    """Sample, build and write the queue; an empty review (size 0) writes nothing."""
    review = config.review
    if review.size == 0 and review.fraction is None:
        return ReviewQueue(str(folder))
    table = with_metadata(inputs.per_sample, inputs.items)
    sample, warnings = select_for_review(table, review, inputs.review_column,
                                         inputs.worst_is_high, inputs.higher_is_better)
    queue = build_queue(sample, inputs.row_key, run_id, inputs.review_texts, review.schema_)
    files = write_queue(sample, queue, review, folder, title)
    files[MANIFEST_FILE] = _write_manifest(folder / MANIFEST_FILE, inputs, config, run_id)
    counts = sample["review_strategy"].value_counts(sort=False)
    return ReviewQueue(str(folder), {k: str(v) for k, v in files.items()}, len(queue),
                       {str(k): int(v) for k, v in counts.items()}, warnings)


def _write_manifest(path: Path, inputs: ReviewInputs, config: EvalConfig, run_id: str) -> Path:
    manifest: dict[str, Any] = {
        "run_id": run_id, "task": config.task.value, "row_key": inputs.row_key,
        "schema": [f.model_dump(mode="json") for f in config.review.schema_],
        "statistics": config.statistics.model_dump(mode="json"),
        "higher_is_better": inputs.higher_is_better,
        "slices": list(config.slices.columns),
    }
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path
