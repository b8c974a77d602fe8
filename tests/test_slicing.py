"""Slices: per-slice metrics with intervals, too-small slices listed, combinations, gaps, and
the slice-vs-rest test with Holm's correction, against pandas / scipy / statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import permutation_test
from statsmodels.stats.multitest import multipletests

from tasks.config import SlicesConfig
from tasks.slicing import gaps, slice_metrics, slice_results, slice_scores, slices_frame
from tasks.stats.bootstrap import BootstrapSettings
from tasks.stats.estimates import Estimate, mean

SETTINGS = BootstrapSettings(resamples=300, seed=0)
ESTIMATES = {"hit": mean("hit"),
             "f1": Estimate("confusion", ("label", "prediction"),
                            {"classes": ["a", "b"], "measure": "f1", "average": "macro"})}


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 240
    background = rng.choice(["white", "black", "gray"], n, p=[0.48, 0.48, 0.04])
    size = rng.choice(["small", "large"], n)
    hit = (rng.random(n) < np.where(background == "black", 0.3, 0.7)).astype(float)
    label = rng.choice(["a", "b"], n)
    prediction = np.where(hit == 1, label, np.where(label == "a", "b", "a"))
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "status": "scored",
                         "background": background, "size": size, "hit": hit, "label": label,
                         "prediction": prediction})


def test_slice_values_sizes_and_too_small_slices(table: pd.DataFrame):
    config = SlicesConfig(columns=["background", "size"], min_size=30, permutations=0)
    results = {r.slice: r for r in slice_results(table, ESTIMATES, "hit", config, SETTINGS)}
    counts = table["background"].value_counts()
    assert results["background=gray"].status == "too small" and counts["gray"] < 30
    assert results["background=gray"].size == counts["gray"] and not results[
        "background=gray"].metrics
    for value, rows in table.groupby("background"):
        if len(rows) >= 30:
            values = results[f"background={value}"].metrics["hit"]
            assert values["value"] == pytest.approx(rows["hit"].mean())
            assert values["ci_low"] <= values["value"] <= values["ci_high"]
    from sklearn.metrics import f1_score

    small = table[table["size"] == "small"]
    assert results["size=small"].metrics["f1"]["value"] == pytest.approx(
        f1_score(small["label"], small["prediction"], average="macro"))
    gap = gaps(list(results.values()))["size"]["hit"]
    by_size = table.groupby("size")["hit"].mean()
    assert gap == pytest.approx(by_size.max() - by_size.min())
    frame = slices_frame(list(results.values()), "hit")
    assert "background=gray" in set(frame["slice"])  # too small: listed, not dropped


def test_combinations(table: pd.DataFrame):
    config = SlicesConfig(columns=["background", "size"], min_size=5, combinations=True,
                          permutations=0)
    results = {r.slice: r for r in slice_results(table, ESTIMATES, "hit", config, SETTINGS)}
    rows = table[(table["background"] == "black") & (table["size"] == "large")]
    combined = results["background=black & size=large"]
    assert combined.size == len(rows)
    assert combined.metrics["hit"]["value"] == pytest.approx(rows["hit"].mean())
    assert "slice.background.black.hit" in slice_metrics(list(results.values()), "hit")
    assert not any("&" in key for key in slice_metrics(list(results.values()), "hit"))


def test_slice_versus_rest_equals_scipy_and_is_holm_corrected(table: pd.DataFrame):
    config = SlicesConfig(columns=["background"], min_size=30, permutations=4999)
    results = [r for r in slice_results(table, ESTIMATES, "hit", config, SETTINGS)
               if r.headline_vs_rest]
    assert len(results) == 2  # gray is too small to test
    for result in results:
        value = result.slice.split("=")[1]
        inside = table["background"] == value
        reference = permutation_test(
            (table["hit"][inside].to_numpy(), table["hit"][~inside].to_numpy()),
            lambda x, y: x.mean() - y.mean(), permutation_type="independent",
            n_resamples=4999, rng=np.random.default_rng(1))
        assert result.headline_vs_rest["delta"] == pytest.approx(reference.statistic)
        assert result.headline_vs_rest["p"] == pytest.approx(reference.pvalue, abs=0.01)
    black = next(r for r in results if r.slice == "background=black")
    assert black.headline_vs_rest["p"] < 1e-3  # planted: black is much worse
    holm = multipletests([r.headline_vs_rest["p"] for r in results], method="holm")[1]
    assert [r.headline_vs_rest["p_holm"] for r in results] == pytest.approx(list(holm))


def test_pair_tables_get_item_metadata_and_unknown_columns_warn(table: pd.DataFrame):
    pairs = table.drop(columns=["background"])
    items = table[["item_id", "background"]]
    config = SlicesConfig(columns=["background", "missing"], min_size=30, permutations=0)
    results, warnings = slice_scores(pairs, items, ESTIMATES, "hit", config, SETTINGS)
    assert {r.slice for r in results} >= {"background=black", "background=white"}
    assert warnings == ["slice column 'missing' is not in the data; not sliced"]
