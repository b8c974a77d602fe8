"""The check between a valid schema and a run: names that live in registries, and rules across
them. The CLI calls it after reading a config and every flow calls it first, so runs started
from the Prefect UI (which validates only the schema) are checked the same way.

Errors are collected and reported together, in the schema errors' format
(``field: problem``), as one ``ConfigError``.
"""

from __future__ import annotations

from typing import Any

from tasks.config import EvalConfig
from tasks.config_io import ConfigError
from tasks.data.base import SOURCES
from tasks.kinds import TaskKindContract, get_task_kind
from tasks.metrics import METRICS
from tasks.models.base import ADAPTERS
from tasks.registry import Registry


def check_config(config: EvalConfig) -> TaskKindContract:
    """Raise ``ConfigError`` naming every problem; return the task kind to run."""
    problems = _unknown(ADAPTERS, [config.model.kind], "model.kind", "model kind")
    problems += _unknown(SOURCES, [config.dataset.source], "dataset.source", "data source")
    problems += _unknown(METRICS, config.metrics, "metrics", "metric")
    kind = get_task_kind(config.task.value)
    if not problems:
        problems += _model_fits_task(config, kind) + _metrics_match_task(config, kind)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
    return kind


def _unknown(registry: Registry[Any], names: list[str], field: str, noun: str) -> list[str]:
    known = registry.names()
    return [f"{field}: unknown {noun} {name!r}; known: {', '.join(known)} (got {name!r})"
            for name in names if name not in known]


def _model_fits_task(config: EvalConfig, kind: TaskKindContract) -> list[str]:
    allowed = kind.model_kinds
    if allowed and config.model.kind not in allowed:
        return [f"model.kind: task {kind.name!r} needs model.kind in {list(allowed)}, "
                f"got {config.model.kind!r}"]
    return []


def _metrics_match_task(config: EvalConfig, kind: TaskKindContract) -> list[str]:
    return [f"metrics: metric {name!r} is for task {METRICS.get(name).task!r}, not "
            f"{kind.metric_task!r}" for name in config.metrics
            if METRICS.get(name).task != kind.metric_task]
