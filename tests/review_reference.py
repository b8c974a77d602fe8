"""Agreement figures of a set of ratings computed with the reference implementations (scipy,
scikit-learn, the krippendorff package), independently of tasks/review and tasks/stats."""

from __future__ import annotations

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import cohen_kappa_score, roc_auc_score


def scripted_ratings(queue: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A scripted reviewer: relevance from the item's image->text rank relative to the worst one
    plus seeded noise, "correct" in the best third (15 % of verdicts flipped), a comment."""
    rng = np.random.default_rng(seed)
    rank = queue["score_i2t_rank"].to_numpy(dtype=float)
    relative = (rank - rank.min()) / max(np.ptp(rank), 1)
    relevance = np.clip(np.round(5 - 4 * relative + rng.normal(0, 0.7, len(rank))), 1, 5)
    flip = rng.random(len(rank)) < 0.15
    verdict = np.where((relative <= 1 / 3) ^ flip, "correct", "incorrect")
    return queue.assign(relevance=relevance.astype(int), verdict=verdict, comment="ok, fine")


def assert_matches(metrics: dict[str, float], expected: dict[str, float]) -> None:
    """Every defined expected figure is on the run; undefined (NaN) ones are absent."""
    defined = {k: v for k, v in expected.items() if not np.isnan(v)}
    assert {k: metrics.get(k) for k in defined} == pytest.approx(defined)
    assert not {k for k in expected if k not in defined} & set(metrics)


def expected_agreement(ratings: pd.DataFrame, metric: pd.Series, name: str,
                       higher_is_better: bool) -> dict[str, float]:
    """``ratings``: review_id, reviewer, relevance (1-5), verdict (correct/incorrect);
    ``metric``: the automatic per-item metric by review_id. Keys as on the review run."""
    per_item = ratings.groupby("review_id").agg(
        relevance=("relevance", "mean"),
        correct=("verdict", lambda v: (v == "correct").mean()))
    per_item["metric"] = metric.reindex(per_item.index).astype(float)
    decided = per_item[per_item["correct"] != 0.5]
    sign = 1 if higher_is_better else -1
    out = {
        "human_relevance_mean": per_item["relevance"].mean(),
        "human_verdict_correct_share": per_item["correct"].mean(),
        f"spearman.{name}.relevance": spearmanr(per_item["metric"],
                                                per_item["relevance"]).statistic,
        f"kendall.{name}.relevance": kendalltau(per_item["metric"],
                                                per_item["relevance"]).statistic,
        f"auroc.{name}.verdict": roc_auc_score(decided["correct"] > 0.5,
                                               sign * decided["metric"]),
    }
    return out | rater_agreement(ratings)


def rater_agreement(ratings: pd.DataFrame) -> dict[str, float]:
    """Cohen's kappa (two raters, on the items both rated) and Krippendorff's alpha."""
    matrix = ratings.pivot(index="reviewer", columns="review_id", values="relevance")
    out = {"alpha.relevance": krippendorff.alpha(matrix.to_numpy(dtype=float),
                                                 level_of_measurement="ordinal",
                                                 value_domain=[1, 2, 3, 4, 5]),
           "interrater_items.relevance": float((matrix.notna().sum() >= 2).sum())}
    if len(matrix) == 2:
        a, b = (ratings[ratings["reviewer"] == r].set_index("review_id") for r in matrix.index)
        both = a.join(b, rsuffix="_b", how="inner")
        out["kappa.relevance"] = cohen_kappa_score(both["relevance"], both["relevance_b"],
                                                   weights="quadratic", labels=[1, 2, 3, 4, 5])
        out["kappa.verdict"] = cohen_kappa_score(both["verdict"], both["verdict_b"])
    return out
