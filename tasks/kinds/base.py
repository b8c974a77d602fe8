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
    files: dict[str, str] = field(default_factory=dict)  # other report files: name -> path
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
    model_kinds: tuple[str, ...] = ()  # adapters that can run this kind
    metric_task: str = ""  # task name of its metrics in the registry (default: the kind's name)
    # how many model inputs an item table holds, given the config (for the progress bar)
    count_inputs: Callable[[Any, Any], int] = lambda items, config: len(items)


TASK_KINDS: Registry[TaskKindSpec] = Registry("task kind")


@dataclass
class MetricRun:
    metrics: dict[str, float] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    per_sample: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def run_metrics(task: str, names: list[str], inputs: Any,
                options: dict[str, dict[str, Any]]) -> MetricRun:
    """Run the configured metrics (default: all of the task); a metric that cannot run on these
    inputs is recorded as skipped with its reason instead of failing the evaluation."""
    from tasks.metrics import get_metric, metrics_for_task

    specs = [get_metric(n) for n in names] or metrics_for_task(task)
    run = MetricRun()
    for spec in specs:
        try:
            result = spec(inputs, **options.get(spec.name, {}))
        except ValueError as error:
            run.skipped[spec.name] = str(error)
            continue
        if result.skipped:
            run.skipped[spec.name] = result.skipped
            continue
        run.metrics |= result.corpus
        run.higher_is_better |= {k: spec.outputs.get(k, not k.endswith("_rank"))
                                 for k in result.corpus}
        run.per_sample |= result.per_sample
        run.warnings += [f"{spec.name}: {w}" for w in result.extra.get("warnings", [])]
        run.extra[spec.name] = {k: v for k, v in result.extra.items() if k != "warnings"}
    return run


def status_columns(table: Any, ok: Any, failures: dict[int, str]) -> Any:
    """Add ``status`` (scored / failed) and ``reason`` columns to a per-item table."""
    import numpy as np

    table["status"] = np.where(ok, "scored", "failed")
    table["reason"] = [failures.get(i, "") for i in range(len(table))]
    return table


def per_item_table(items: Any, ok: Any, failures: dict[int, str], per_sample: dict[str, Any],
                   predictions: list[str | None] | None = None) -> Any:
    """One row per item: the item's columns, its prediction, status/reason and every per-sample
    metric (NaN on rows that were not scored)."""
    import numpy as np

    table = status_columns(items.drop(columns=["image_sha256"]), ok, failures)
    if predictions is not None:
        table.insert(3, "prediction", [p or "" for p in predictions])
    for name, values in per_sample.items():
        column = np.full(len(items), np.nan)
        column[ok] = values
        table[name] = column
    return table


def write_per_sample(table: Any, out: Any) -> str:
    from tasks.data.base import write_parquet

    out.mkdir(parents=True, exist_ok=True)
    write_parquet(table, out / "per_sample.parquet")
    return str(out / "per_sample.parquet")


def register_task_kind(spec: TaskKindSpec) -> TaskKindSpec:
    if not spec.metric_task:
        object.__setattr__(spec, "metric_task", spec.name)
    TASK_KINDS.register(spec.name, spec)
    return spec
