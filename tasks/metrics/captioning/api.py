"""Score captions with several coco-caption metrics at once, tokenising only once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.metrics.base import MetricResult, get_metric, metrics_for_task
from tasks.metrics.captioning.inputs import CaptionInputs

TASK = "captioning"


def captioning_metric_names() -> list[str]:
    """Names of all registered captioning metrics, sorted."""
    return [spec.name for spec in metrics_for_task(TASK)]


def score_captions(
    inputs: CaptionInputs,
    metrics: Sequence[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, MetricResult]:
    """Run the requested captioning metrics (default: all registered ones) on ``inputs``.

    The PTB tokenisation (and the n-gram tables of BLEU/CIDEr) is computed once and shared.
    Metrics that cannot run here (METEOR without Java, SPICE without CoreNLP) or not on these
    inputs (CIDEr-D on one image: ``ValueError``) come back as ``MetricResult.skip`` with the
    reason, as in the evaluation flow; ``options`` maps a metric name to keyword options.
    """
    known = captioning_metric_names()
    names = list(metrics) if metrics is not None else known
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown captioning metric(s) {unknown}; known: {known}")
    options = options or {}
    inputs.tokenized()  # computed once, shared by every metric below
    results: dict[str, MetricResult] = {}
    for name in names:
        try:
            results[name] = get_metric(name)(inputs, **options.get(name, {}))
        except ValueError as error:
            results[name] = MetricResult.skip(str(error))
    return results
