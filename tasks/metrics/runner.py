"""Run a task's metrics on one inputs object: each metric is isolated, so one that cannot run on
these inputs is recorded as skipped with its reason instead of failing the evaluation."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.metrics.base import MetricSpec, get_metric, metrics_for_task
from tasks.secrets import resolve_references
from tasks.stats.estimates import Estimate


@dataclass
class MetricRun:
    metrics: dict[str, float] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    estimates: dict[str, Estimate] = field(default_factory=dict)


def run_metrics(task: str, names: list[str], inputs: Any,
                options: dict[str, dict[str, Any]],
                defaults: dict[str, Any] | None = None) -> MetricRun:
    """Run the named metrics (default: all of ``task``). ``defaults`` are the run's settings
    (e.g. ``device``, ``batch_size``) given to every metric that takes such a keyword, unless
    its own ``options`` set it."""
    specs = [get_metric(n) for n in names] or metrics_for_task(task)
    run = MetricRun()
    for spec in specs:
        try:
            result = spec(inputs, **_options(spec, options.get(spec.name, {}), defaults or {}))
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
        run.estimates |= {k: v for k, v in result.estimates.items() if k in result.corpus}
        run.warnings += [f"{spec.name}: {w}" for w in result.extra.get("warnings", [])]
        run.extra[spec.name] = {k: v for k, v in result.extra.items() if k != "warnings"}
    return run


def _options(spec: MetricSpec, own: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    accepted = inspect.signature(spec.fn).parameters
    # secret options are ${env:NAME} references in the config (tasks/secrets.py)
    return {k: v for k, v in defaults.items() if k in accepted} | resolve_references(own)
