"""random: a seeded uniform sample of the candidates (what typical items look like)."""

from __future__ import annotations

import pandas as pd

from tasks.config import SamplingStrategy
from tasks.review.strategies.base import SamplingContext, draw, register_strategy


@register_strategy("random")
def random_sample(candidates: pd.DataFrame, n: int, spec: SamplingStrategy,
                  context: SamplingContext) -> pd.Index:
    """``min(n, candidates)`` items drawn uniformly without replacement, in draw order."""
    return draw(candidates.index, n, context.rng)
