"""Matching scoring: the threshold is given, or chosen on a seeded held-out share of the images
and applied to the rest; accuracy, precision, recall, F1 at it and AUROC over all thresholds.
The per-pair ``margin`` is ``|score − threshold|``: how far the pair is from flipping (the
review's ``margin`` strategy samples the smallest); NaN for failed pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import EvalConfig
from tasks.data.base import DatasetRef
from tasks.kinds.base import InferenceRef, Scores
from tasks.kinds.scoring import (
    metric_columns,
    ok_mask,
    score_metrics,
    with_intervals,
    write_per_sample,
)
from tasks.kinds.sharded import load_arrays
from tasks.metrics.matching import MatchingInputs, best_threshold


def calibration_split(item_ids: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over pairs: True where the pair's image is in the calibration share."""
    unique = item_ids.unique()
    rng = np.random.default_rng(seed)
    count = max(1, round(fraction * len(unique)))
    held = set(rng.choice(unique, size=count, replace=False))
    return item_ids.isin(held).to_numpy()


def score(dataset: DatasetRef, inference: InferenceRef, config: EvalConfig, out: Path) -> Scores:
    pairs = pd.read_parquet(str(inference.pairs_path))
    scores = load_arrays(inference, "scores")
    ok = ok_mask(len(pairs), inference.failures)
    threshold, calibration = choose_threshold(pairs, scores, ok, config)
    evaluated = ok & ~calibration
    inputs = MatchingInputs(list(pairs["pair_id"][evaluated]),
                            pairs["label"].to_numpy()[evaluated], scores[evaluated], threshold)
    run = score_metrics("matching", inputs, config)
    table = _pairs_table(pairs, scores, evaluated, ok, inference.failures, run.per_sample)
    table["margin"] = np.where(ok, np.abs(scores - threshold), np.nan)
    # reports show the image's captions next to the pair's text
    table["captions"] = table["item_id"].map(dataset.load_items().set_index("item_id")["captions"])
    counts = {"pairs": len(pairs), "pairs_scored": int(evaluated.sum()),
              "calibration_pairs": int((calibration & ok).sum()), "failed": int((~ok).sum()),
              "positives": int(pairs["label"].sum())}
    counts |= {f"pairs_{kind}": int(n) for kind, n in pairs["pair_kind"].value_counts().items()}
    return Scores(
        metrics=with_intervals(run, table, config),
        higher_is_better=run.higher_is_better | {"threshold": True}, estimates=run.estimates,
        row_key="pair_id", per_sample_path=write_per_sample(table, out), review_column="correct",
        review_worst_is_high=False, skipped=run.skipped, warnings=run.warnings, counts=counts,
    )


def choose_threshold(pairs: pd.DataFrame, scores: np.ndarray, ok: np.ndarray,
                     config: EvalConfig) -> tuple[float, np.ndarray]:
    """The configured threshold, or the best one on the calibration share (and its mask)."""
    settings = config.matching
    if settings.threshold is not None:
        return settings.threshold, np.zeros(len(pairs), dtype=bool)
    calibration = calibration_split(pairs["item_id"], settings.calibration_fraction,
                                    config.seed) & ok
    labels = pairs["label"].to_numpy()
    return best_threshold(labels[calibration], scores[calibration]), calibration


def _pairs_table(pairs: pd.DataFrame, scores: np.ndarray, evaluated: np.ndarray, ok: np.ndarray,
                 failures: dict[int, str], per_sample: dict[str, np.ndarray]) -> pd.DataFrame:
    table = pairs.copy()
    table["score"] = scores
    table["status"] = np.where(evaluated, "scored", np.where(ok, "calibration", "failed"))
    table["reason"] = [failures.get(i, "") for i in range(len(pairs))]
    return metric_columns(table, evaluated, per_sample)
