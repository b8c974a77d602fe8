"""The review queue: the sampled items in the one shape every export (CSV, JSONL, Label Studio,
the HTML sheet) and every ingest reader share.

One row per item to review:

- ``review_id``: the per-sample row key (``item_id``, or ``pair_id`` for matching); the ratings
  come back under it;
- ``run_id``: the MLflow run the queue belongs to (an ingest checks it);
- ``review_strategy``: the sampling strategy that chose the item (``failed`` for failures);
- ``status`` / ``reason``: scored or failed, and why;
- ``image_path``: the local image file;
- ``question`` / ``prediction`` / ``references``: what the reviewer reads next to the image
  (per task kind, ``TaskKindSpec.review_texts``); ``references`` is a list of strings;
- ``scores``: the item's numeric per-sample metrics, ``{name: value}`` (NaN dropped);
- one empty column per rating field of ``review.schema``, plus ``reviewer``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import RatingField

TEXT_ROLES = ("question", "prediction", "references")
QUEUE_COLUMNS = ("review_id", "run_id", "review_strategy", "status", "reason", "image_path",
                 *TEXT_ROLES, "scores")
REVIEWER_COLUMN = "reviewer"
# per-sample columns that are bookkeeping, not scores
NOT_SCORES = frozenset({"status", "reason", "image_path", "image_sha256", "item_id", "pair_id",
                        "label", "t2i_ranks", "source_rows", "texts"})


def build_queue(sample: pd.DataFrame, row_key: str, run_id: str,
                review_texts: Iterable[tuple[str, str]], schema: list[RatingField]
                ) -> pd.DataFrame:
    """The queue rows of a sample (per-sample rows with ``review_strategy``), in sample order."""
    texts = dict(review_texts)
    queue = pd.DataFrame({
        "review_id": sample[row_key].astype(str).to_numpy(),
        "run_id": run_id,
        "review_strategy": sample["review_strategy"].to_numpy(),
        "status": sample["status"].to_numpy(),
        "reason": sample.get("reason", pd.Series("", index=sample.index)).fillna("").to_numpy(),
        "image_path": sample["image_path"].astype(str).to_numpy(),
    })
    for role in TEXT_ROLES:
        column = texts.get(role)
        values = sample[column] if column in sample.columns else pd.Series(None, sample.index)
        convert = as_strings if role == "references" else text_or_none
        queue[role] = [convert(v) for v in values]
    queue["scores"] = [_scores(row) for _, row in sample.iterrows()]
    queue[REVIEWER_COLUMN] = ""
    for field in schema:
        queue[field.name] = ""
    return queue


def text_or_none(value: Any) -> str | None:
    """A text cell as a string; None for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def as_strings(value: Any) -> list[str]:
    """A list cell (list, tuple, array) as strings; one text alone; None / NaN as none."""
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v) for v in value]
    text = text_or_none(value)
    return [] if text is None else [text]


def _scores(row: pd.Series) -> dict[str, float]:
    out = {}
    for name, value in row.items():
        if name in NOT_SCORES or isinstance(value, bool | np.bool_):
            continue
        if isinstance(value, int | float | np.integer | np.floating) and not math.isnan(value):
            out[str(name)] = float(value)
    return out


def score_names(queue: pd.DataFrame) -> list[str]:
    """The score names that appear in the queue, in first-seen order."""
    seen: dict[str, None] = {}
    for scores in queue["scores"]:
        seen.update(dict.fromkeys(scores))
    return list(seen)
