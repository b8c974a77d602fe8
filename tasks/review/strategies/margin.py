"""margin: the items the model was least sure of (smallest margin between its best and
second-best candidate; scoring writes a ``margin`` column for zero-shot, retrieval, matching)."""

from __future__ import annotations

import pandas as pd

from tasks.config import SamplingStrategy
from tasks.review.strategies.base import SamplingContext, numeric, register_strategy, smallest

MARGIN_COLUMN = "margin"


@register_strategy("margin")
def margin(candidates: pd.DataFrame, n: int, spec: SamplingStrategy,
           context: SamplingContext) -> pd.Index:
    """The ``n`` smallest values of ``spec.metric`` (default ``margin``), smallest first; NaN
    never chosen, ties in table order. ``higher_is_worse`` is not used: small is unsure."""
    return smallest(numeric(candidates, spec.metric or MARGIN_COLUMN), n)
