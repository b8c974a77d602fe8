from pathlib import Path

import pandas as pd
import pytest

from tasks.config import ReviewConfig
from tasks.review.sampling import select_for_review, write_review_csv


def table(n: int = 20, failed: int = 0) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": [f"i{k}" for k in range(n)],
        "rank": [(k * 7) % n + 1 for k in range(n)],
        "captions": [["a", "b"]] * n,
        "status": ["failed" if k < failed else "scored" for k in range(n)],
    })


def test_worst_and_random_is_seeded_and_disjoint():
    config = ReviewConfig(size=6, seed=3)
    first = select_for_review(table(), config, "rank", worst_is_high=True)
    again = select_for_review(table(), config, "rank", worst_is_high=True)
    other = select_for_review(table(), ReviewConfig(size=6, seed=4), "rank", worst_is_high=True)
    assert first["item_id"].tolist() == again["item_id"].tolist()
    assert first["item_id"].tolist() != other["item_id"].tolist()
    worst = first[first["review_reason"] == "worst"]
    assert sorted(worst["rank"], reverse=True) == [20, 19, 18]
    assert first["item_id"].is_unique and len(first) == 6


@pytest.mark.parametrize(("strategy", "reasons"), [("worst", {"worst"}), ("random", {"random"})])
def test_single_strategies(strategy, reasons):
    sample = select_for_review(table(), ReviewConfig(size=5, strategy=strategy), "rank", False)
    assert set(sample["review_reason"]) == reasons and len(sample) == 5
    if strategy == "worst":
        assert sorted(sample["rank"]) == [1, 2, 3, 4, 5]


def test_failures_are_included_and_size_is_capped():
    sample = select_for_review(table(n=5, failed=2), ReviewConfig(size=50), "rank", True)
    assert len(sample) == 5 and "failed" in set(sample["review_reason"])
    assert select_for_review(table(), ReviewConfig(size=0), "rank", True).empty


def test_csv_has_reviewer_columns_and_flat_lists(tmp_path: Path):
    path = write_review_csv(select_for_review(table(), ReviewConfig(size=2), "rank", True),
                            tmp_path / "r.csv")
    frame = pd.read_csv(path)
    assert {"review_verdict", "review_notes", "review_reason"} <= set(frame.columns)
    assert frame["captions"].tolist() == ["a | b", "a | b"]
