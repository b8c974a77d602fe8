"""Metric registry. Every module (or subpackage) in this package registers its metrics on import."""

from tasks.metrics.base import (
    METRICS,
    MetricResult,
    MetricSpec,
    get_metric,
    metrics_for_task,
    register_metric,
)

__all__ = [
    "METRICS", "MetricResult", "MetricSpec", "get_metric", "metrics_for_task", "register_metric",
]
