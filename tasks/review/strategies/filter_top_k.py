"""filter_top_k: the worst items among those passing thresholds on other columns, e.g. the
lowest CIDEr among captions with CLIPScore of at least 0.25."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from tasks.config import SamplingStrategy
from tasks.review.strategies.base import SamplingContext, numeric, register_strategy
from tasks.review.strategies.worst import worst


@register_strategy("filter_top_k")
def filter_top_k(candidates: pd.DataFrame, n: int, spec: SamplingStrategy,
                 context: SamplingContext) -> pd.Index:
    """The ``n`` worst (as :func:`~tasks.review.strategies.worst.worst`) among the candidates
    within every bound of ``spec.thresholds``; bounds are inclusive, NaN passes none."""
    return worst(candidates[passing(candidates, spec.thresholds)], n, spec, context)


def passing(candidates: pd.DataFrame,
            thresholds: Mapping[str, Mapping[Literal["min", "max"], float]]) -> np.ndarray:
    """Rows within ``min <= value <= max`` for every thresholded column."""
    keep = np.ones(len(candidates), dtype=bool)
    for column, bounds in thresholds.items():
        values = numeric(candidates, column).to_numpy()
        with np.errstate(invalid="ignore"):
            keep &= values >= bounds.get("min", -np.inf)
            keep &= values <= bounds.get("max", np.inf)
    return keep
