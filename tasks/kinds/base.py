"""Task kinds: how one kind of evaluation runs inference and scores (retrieval, captioning, ...).

The flow is the same for every kind; a kind supplies ``infer`` and ``score``. Adding a kind is
one module in this package registering a ``TaskKindSpec``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.registry import Registry


@dataclass
class Scores:
    """What scoring hands on: corpus metrics and the per-sample table on disk."""

    metrics: dict[str, float]
    higher_is_better: dict[str, bool]
    per_sample_path: str  # parquet, one row per item (status scored / failed)
    review_column: str  # per-sample column ranking items from worst to best
    review_worst_is_high: bool
    extra_tables: dict[str, str] = field(default_factory=dict)  # name -> parquet path
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> reason
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskKindSpec:
    name: str
    infer: Callable[..., Any]
    score: Callable[..., Scores]
    display_columns: tuple[str, ...] = ()  # per-sample columns worth showing in reports


TASK_KINDS: Registry[TaskKindSpec] = Registry("task kind")


def register_task_kind(spec: TaskKindSpec) -> TaskKindSpec:
    TASK_KINDS.register(spec.name, spec)
    return spec
