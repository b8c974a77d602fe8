"""Pick items for human review: the worst-scored (where errors concentrate) plus a seeded random
sample of the rest (so reviewers also see typical behaviour). Written as a CSV with empty
columns for the reviewer's verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import ReviewConfig

REVIEW_COLUMNS = ["review_verdict", "review_notes"]


def select_for_review(
    table: pd.DataFrame, config: ReviewConfig, score_column: str, worst_is_high: bool
) -> pd.DataFrame:
    """Return the sampled rows with a ``review_reason`` column (worst / random / failed)."""
    size = min(config.size, len(table))
    if size == 0:
        return table.iloc[0:0].assign(review_reason=pd.Series(dtype=str))
    scored = table[table["status"] == "scored"]
    failed = table[table["status"] != "scored"]
    # failures always deserve a look: a tenth of the budget, more if scored rows run short
    n_failed = min(len(failed), max(1, size // 10), size)
    n_failed = max(n_failed, size - len(scored))
    picks = [failed.head(n_failed).assign(review_reason="failed")]
    budget = size - len(picks[0])
    n_worst = {"worst": budget, "random": 0}.get(config.strategy, budget // 2)
    worst = scored.sort_values(score_column, ascending=not worst_is_high, kind="stable")
    worst = worst.head(n_worst)
    picks.append(worst.assign(review_reason="worst"))
    rest = scored.drop(index=worst.index)
    n_random = min(budget - len(worst), len(rest))
    if n_random > 0:
        rng = np.random.default_rng(config.seed)
        chosen = np.sort(rng.choice(len(rest), size=n_random, replace=False))
        picks.append(rest.iloc[chosen].assign(review_reason="random"))
    return pd.concat(picks)


def write_review_csv(sample: pd.DataFrame, path: Path) -> Path:
    out = sample.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, list | tuple | np.ndarray)).any():
            out[column] = out[column].map(lambda v: " | ".join(map(str, v)))
    for column in REVIEW_COLUMNS:
        out[column] = ""
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return path
