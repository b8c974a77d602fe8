"""Paired comparison of two runs' per-sample tables against scipy / scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score, roc_auc_score

from tasks.stats.bootstrap import BootstrapSettings
from tasks.stats.compare import align, compare_tables
from tasks.stats.estimates import Estimate, interval, mean, point_value

SETTINGS = BootstrapSettings(resamples=500, seed=0)


def runs(n: int, flip: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    score_a = label + rng.normal(0, 1.0, n)
    score_b = label + rng.normal(0, 1.0, n) * (0.4 if flip else 1.0)
    frame = pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "label": label})
    a = frame.assign(score=score_a, hit=(rng.random(n) < 0.5).astype(float))
    b = frame.assign(score=score_b, hit=np.where(rng.random(n) < flip, 1.0, a["hit"]))
    for table in (a, b):
        table["predicted"] = (table["score"] > 0.5).astype(int)
    return a, b


ESTIMATES = {
    "hit_rate": mean("hit"),
    "auroc": Estimate("auroc", ("score", "label")),
    "f1": Estimate("confusion", ("label", "predicted"),
                   {"classes": ["0", "1"], "measure": "f1", "average": "binary", "positive": 1}),
}


def test_identical_runs_show_no_difference():
    a, _ = runs(300, 0.0)
    results = compare_tables(a, a.copy(), ESTIMATES, {}, SETTINGS, permutations=999)
    for result in results:
        assert result.delta == 0 and result.ci_low <= 0 <= result.ci_high
        assert result.pvalue > 0.9 and result.p_holm >= result.pvalue


def test_a_planted_difference_is_detected_with_the_reference_statistics():
    a, b = runs(400, 0.3)
    results = {r.metric: r for r in compare_tables(a, b, ESTIMATES, {}, SETTINGS, 1999)}
    hit = results["hit_rate"]
    assert hit.test == "mcnemar"
    a_only = int(((a["hit"] == 1) & (b["hit"] == 0)).sum())
    b_only = int(((a["hit"] == 0) & (b["hit"] == 1)).sum())
    assert (hit.a_only, hit.b_only) == (a_only, b_only)
    assert hit.pvalue == pytest.approx(binomtest(b_only, a_only + b_only, 0.5).pvalue)
    assert hit.pvalue < 1e-6 and hit.ci_low > 0 and hit.improved
    auroc = results["auroc"]
    assert auroc.delta == pytest.approx(roc_auc_score(b["label"], b["score"])
                                        - roc_auc_score(a["label"], a["score"]))
    assert auroc.pvalue < 0.01 and auroc.ci_low > 0
    f1 = results["f1"]
    assert f1.a == pytest.approx(f1_score(a["label"], a["predicted"]))
    assert f1.b == pytest.approx(f1_score(b["label"], b["predicted"]))
    ps = sorted(r.pvalue for r in results.values())
    assert min(r.p_holm for r in results.values()) == pytest.approx(min(1.0, 3 * ps[0]))


def test_a_tiny_noisy_difference_is_not_significant():
    a, _ = runs(300, 0.0, seed=3)
    rng = np.random.default_rng(4)
    noisy = rng.random(len(a)) < 0.1  # 10% of the rows re-drawn at random: changes both ways
    b = a.assign(hit=np.where(noisy, (rng.random(len(a)) < 0.55).astype(float), a["hit"]))
    (result,) = compare_tables(a, b, {"hit_rate": mean("hit")}, {}, SETTINGS)
    assert result.a_only and result.b_only
    assert result.pvalue > 0.05 and result.ci_low < 0 < result.ci_high


def test_align_keeps_rows_scored_in_both_runs():
    a = pd.DataFrame({"item_id": ["x", "y", "z"], "status": ["scored", "failed", "scored"],
                      "hit": [1.0, np.nan, 0.0]})
    b = pd.DataFrame({"item_id": ["z", "y", "x", "w"], "status": ["scored"] * 4,
                      "hit": [1.0, 1.0, 1.0, 0.0]})
    rows_a, rows_b = align(a, b, "item_id")
    assert rows_a["item_id"].tolist() == rows_b["item_id"].tolist() == ["x", "z"]
    assert rows_b["hit"].tolist() == [1.0, 1.0]


def test_breakdowns_and_json_round_trip():
    table = pd.DataFrame({"hit": [1.0, 0.0, 1.0, 1.0], "kind": ["a", "b", "a", "b"]})
    estimate = Estimate.from_json(mean("hit", where=("kind", "b")).to_json())
    assert estimate.where == ("kind", "b")
    assert point_value(estimate, table) == 0.5
    assert interval(estimate, table, BootstrapSettings(resamples=0)).estimate == 0.5
