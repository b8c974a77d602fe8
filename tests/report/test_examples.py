from pathlib import Path

import pandas as pd

from tasks.report.summary import examples


def test_examples_follow_the_review_sample_for_items_and_for_pairs(tmp_path: Path):
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "score": [1.0, 2.0, 3.0]})
    items.iloc[[2, 0]].assign(review_reason=["worst", "random"]).to_csv(tmp_path / "r.csv",
                                                                       index=False)
    shown = examples(items, tmp_path / "r.csv", count=5)
    assert shown["item_id"].tolist() == ["c", "a"]  # worst first
    pairs = pd.DataFrame({"pair_id": ["a#0", "a#1", "b#2"], "item_id": ["a", "a", "b"]})
    pairs.iloc[[1, 0]].assign(review_reason=["worst", "random"]).to_csv(tmp_path / "p.csv",
                                                                       index=False)
    shown = examples(pairs, tmp_path / "p.csv", count=5)
    assert shown["pair_id"].tolist() == ["a#1", "a#0"]
    assert shown["review_reason"].tolist() == ["worst", "random"]
