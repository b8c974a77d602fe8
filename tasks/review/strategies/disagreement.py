"""disagreement: items two metrics judge most differently, e.g. a high CLIPScore but a low
CIDEr (one of the two metrics is wrong about the item; reviewers settle which)."""

from __future__ import annotations

import pandas as pd

from tasks.config import SamplingStrategy
from tasks.review.strategies.base import (
    SamplingContext,
    StrategyError,
    numeric,
    register_strategy,
    smallest,
)


@register_strategy("disagreement")
def disagreement(candidates: pd.DataFrame, n: int, spec: SamplingStrategy,
                 context: SamplingContext) -> pd.Index:
    """The ``n`` candidates with the largest gap between the normalised ranks of the two
    ``spec.metrics``, largest first (ties in table order).

    Ranks are average ranks divided by the number of rows where both columns are defined (rows
    with a NaN in either leave), each oriented so that a higher rank is better: a column counts
    as higher-is-worse by :meth:`SamplingContext.worse_is_high` (the task's review column, then
    the run's known directions, then rank columns such as ``i2t_rank`` or ``best_t2i_rank``).
    """
    if len(spec.metrics) != 2:
        raise StrategyError(f"disagreement needs exactly two metrics, got {spec.metrics}")
    first, second = (numeric(candidates, name) for name in spec.metrics)
    both = first.notna() & second.notna()
    gap = (quality_ranks(first[both], context.worse_is_high(spec.metrics[0]))
           - quality_ranks(second[both], context.worse_is_high(spec.metrics[1]))).abs()
    return smallest(-gap, n)


def quality_ranks(values: pd.Series, worse_is_high: bool) -> pd.Series:
    """Average ranks in (0, 1], highest for the best value."""
    oriented = -values if worse_is_high else values
    return oriented.rank(method="average") / max(len(values), 1)
