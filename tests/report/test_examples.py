from pathlib import Path

import pandas as pd

from tasks.report.summary import examples


def test_examples_follow_the_review_sample_for_items_and_for_pairs(tmp_path: Path):
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "score": [1.0, 2.0, 3.0, 4.0]})
    items.iloc[[2, 0, 3]].assign(review_strategy=["worst", "random", "failed"]).to_parquet(
        tmp_path / "r.parquet")
    shown = examples(items, tmp_path / "r.parquet", "item_id", count=5)
    assert shown["item_id"].tolist() == ["d", "c", "a"]  # failures, then in strategy order
    pairs = pd.DataFrame({"pair_id": ["a#0", "a#1", "b#2"], "item_id": ["a", "a", "b"]})
    pairs.iloc[[1, 0]].assign(review_strategy=["worst", "random"]).to_parquet(
        tmp_path / "p.parquet")
    shown = examples(pairs, tmp_path / "p.parquet", "pair_id", count=5)
    assert shown["pair_id"].tolist() == ["a#1", "a#0"]
    assert shown["review_strategy"].tolist() == ["worst", "random"]


def test_examples_without_a_review_sample_show_the_first_rows(tmp_path: Path):
    items = pd.DataFrame({"item_id": ["a", "b", "c"]})
    shown = examples(items, tmp_path / "absent.parquet", "item_id", count=2)
    assert shown["item_id"].tolist() == ["a", "b"] and set(shown["review_strategy"]) == {""}
