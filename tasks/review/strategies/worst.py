"""worst: the items scoring worst on a per-sample column (where errors concentrate)."""

from __future__ import annotations

import pandas as pd

from tasks.config import SamplingStrategy
from tasks.review.strategies.base import SamplingContext, numeric, register_strategy, worst_first


@register_strategy("worst")
def worst(candidates: pd.DataFrame, n: int, spec: SamplingStrategy,
          context: SamplingContext) -> pd.Index:
    """The ``n`` worst by ``spec.metric`` (default: the task's review column), worst first.

    Direction: ``spec.higher_is_worse``, else the context's rule
    (:meth:`SamplingContext.worse_is_high`). NaN never counts as worst; ties keep table order.
    """
    metric = spec.metric or context.metric
    high = context.worse_is_high(metric, spec.higher_is_worse)
    return worst_first(numeric(candidates, metric), n, high)
