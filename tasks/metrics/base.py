"""Metric registry: each metric is a plain function registered with its task kind and outputs.

A metric function takes the task's inputs object (e.g. ``RetrievalInputs``, ``CaptionInputs``)
plus keyword options and returns a ``MetricResult``: corpus values, per-sample arrays aligned
with the inputs' sample order, a skip reason when it cannot run here (e.g. no Java), and for
each corpus value an ``Estimate`` saying how it is recomputed from per-sample columns (its own
per-sample arrays, or the per-item table's columns such as ``label`` / ``prediction``), which
gives every metric its bootstrap interval, its slices and its paired comparisons.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.registry import Registry
from tasks.stats.estimates import Estimate


def safe_key_part(name: str) -> str:
    """A free-form name (class, answer type) as one MLflow-safe metric-key segment.

    Characters outside ``[\\w.-]`` become "_": "yes/no" -> "yes_no", "golden retriever" ->
    "golden_retriever", so one name is always one key segment.
    """
    return re.sub(r"[^\w.\-]", "_", name) or "_"


@dataclass
class MetricResult:
    corpus: dict[str, float] = field(default_factory=dict)
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: str | None = None  # reason, when the metric could not be computed
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. warnings, confusion matrix
    # corpus key -> how it is recomputed from per-sample columns (intervals, slices, comparisons)
    estimates: dict[str, Estimate] = field(default_factory=dict)

    @classmethod
    def skip(cls, reason: str) -> MetricResult:
        return cls(skipped=reason)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    task: str
    outputs: Mapping[str, bool]  # output metric key -> higher_is_better
    fn: Callable[..., MetricResult]
    description: str = ""

    def __call__(self, inputs: Any, **options: Any) -> MetricResult:
        return self.fn(inputs, **options)


METRICS: Registry[MetricSpec] = Registry("metric", package="tasks.metrics", skip=("base", "runner"))


def register_metric(
    name: str, *, task: str, outputs: Mapping[str, bool], description: str = ""
) -> Callable[[Callable[..., MetricResult]], Callable[..., MetricResult]]:
    """Decorator: ``@register_metric("bleu", task="captioning", outputs={"bleu_4": True})``."""

    def wrap(fn: Callable[..., MetricResult]) -> Callable[..., MetricResult]:
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        METRICS.add(name, MetricSpec(name, task, dict(outputs), fn, doc))
        return fn

    return wrap


def metrics_for_task(task: str) -> list[MetricSpec]:
    return [METRICS.get(n) for n in METRICS.names() if METRICS.get(n).task == task]


def get_metric(name: str) -> MetricSpec:
    return METRICS.get(name)
