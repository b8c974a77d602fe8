"""Metric registry: each metric is a plain function registered with its task kind and outputs.

A metric function takes the task's inputs object (e.g. ``RetrievalInputs``, ``CaptionInputs``)
plus keyword options and returns a ``MetricResult``: corpus values, per-sample arrays aligned
with the inputs' sample order, a skip reason when it cannot run here (e.g. no Java), and for
each corpus value an ``Estimate`` saying how it is recomputed from per-sample columns (its own
per-sample arrays, or the per-item table's columns such as ``label`` / ``prediction``), which
gives every metric its bootstrap interval, its slices and its paired comparisons.

A metric's options (``metric_options.<name>`` in a config) are declared by its signature: the
keyword parameters after ``inputs``, with their type annotations (``MetricSpec.options()``);
``tasks.plan.check_config`` validates configs against them before anything runs.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
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
class MetricOption:
    """One keyword option of a metric: its name, type annotation (``Any`` when it has none)
    and default (``inspect.Parameter.empty`` when it has none)."""

    name: str
    annotation: Any
    default: Any


@dataclass(frozen=True)
class MetricSpec:
    name: str
    task: str
    outputs: Mapping[str, bool]  # output metric key -> higher_is_better
    fn: Callable[..., MetricResult]
    description: str = ""

    def __call__(self, inputs: Any, **options: Any) -> MetricResult:
        return self.fn(inputs, **options)

    def options(self) -> dict[str, MetricOption]:
        """The options the metric takes: its keyword parameters after ``inputs``."""
        parameters = list(inspect.signature(self.fn).parameters.values())[1:]
        return {p.name: MetricOption(p.name, _resolved(self.fn, p), p.default)
                for p in parameters
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def takes_any_option(self) -> bool:
        """True when the metric accepts ``**kwargs``: other option names are not refused."""
        return any(p.kind is p.VAR_KEYWORD
                   for p in inspect.signature(self.fn).parameters.values())


def _resolved(fn: Callable[..., Any], parameter: inspect.Parameter) -> Any:
    """A parameter's annotation as a type (string annotations resolved in the function's
    module); ``Any`` when it has none or it cannot be resolved."""
    if parameter.annotation is parameter.empty:
        return Any
    holder = types.SimpleNamespace(__annotations__={parameter.name: parameter.annotation})
    try:
        return typing.get_type_hints(holder, globalns=getattr(fn, "__globals__", None),
                                     include_extras=True)[parameter.name]
    except (NameError, TypeError, SyntaxError):
        return Any


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
