import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.config import ReviewConfig, SamplingStrategy
from tasks.registry import RegistryError
from tasks.review.sampling import (
    select_for_review,
    strategy_fractions,
    strategy_quotas,
)

ISSUE_STRATEGIES = [{"name": "worst", "share": 0.4, "metric": "cider"},
                    {"name": "stratified", "share": 0.3, "column": "background"},
                    {"name": "random", "share": 0.3}]


def table(n: int = 1000, failed: int = 30, calibration: int = 0, seed: int = 0) -> pd.DataFrame:
    """Captioning-like per-sample rows: ``failed`` failures and ``calibration`` held-out rows
    spread over the table."""
    rng = np.random.default_rng(seed)
    status = np.array(["scored"] * n, dtype=object)
    special = rng.permutation(n)
    status[special[:failed]] = "failed"
    status[special[failed:failed + calibration]] = "calibration"
    frame = pd.DataFrame({
        "item_id": [f"i{k}" for k in range(n)],
        "captions": [["a", "b"]] * n,
        "background": rng.choice(["indoor", "outdoor", "studio", None], n),
        "cider": rng.random(n), "clip_score": rng.random(n), "status": status,
    })
    frame.loc[frame["status"] != "scored", "cider"] = np.nan
    return frame


def config(**fields) -> ReviewConfig:
    return ReviewConfig(**({"strategies": ISSUE_STRATEGIES} | fields))


def sample(frame: pd.DataFrame, review: ReviewConfig) -> tuple[pd.DataFrame, list[str]]:
    return select_for_review(frame, review, "cider", False)


def per_strategy(rows: pd.DataFrame) -> dict[str, int]:
    return rows["review_strategy"].value_counts().to_dict()


def test_issue_example_gives_exact_counts_without_duplicates():
    frame = table(calibration=40)
    rows, warnings = sample(frame, config(size=200, failed_share=0.1))
    assert warnings == []
    # 20 failures; 180 left: worst 72, stratified 54, random 54
    assert per_strategy(rows) == {"worst": 72, "stratified": 54, "random": 54, "failed": 20}
    assert rows["item_id"].is_unique and len(rows) == 200
    assert (rows["status"] == rows["review_strategy"].eq("failed").map(
        {True: "failed", False: "scored"})).all()
    scored = frame[frame["status"] == "scored"]
    worst = rows[rows["review_strategy"] == "worst"]
    assert set(worst.index) == set(scored["cider"].nsmallest(72).index)
    assert list(rows.columns) == list(frame.columns) + ["review_strategy"]


def test_rows_come_in_the_order_they_were_chosen():
    rows, _ = sample(table(), config(size=50))
    order = rows["review_strategy"].tolist()
    assert order == sorted(order, key=["failed", "worst", "stratified", "random"].index)
    worst = rows.loc[rows["review_strategy"] == "worst", "cider"]
    assert worst.is_monotonic_increasing


def test_fraction_counts_eligible_rows_and_calibration_is_never_sampled():
    frame = table(n=1000, failed=30, calibration=50)
    rows, _ = sample(frame, config(fraction=0.1))
    assert len(rows) == 95  # ceil(0.1 × 950 scored or failed)
    everything, _ = sample(frame, config(size=5000))
    assert len(everything) == 950 and "calibration" not in set(everything["status"])
    assert everything["item_id"].is_unique


def test_same_seed_same_sample_other_seed_other_random_parts():
    frame = table()
    first, _ = sample(frame, config(size=100, seed=1))
    again, _ = sample(frame, config(size=100, seed=1))
    other, _ = sample(frame, config(size=100, seed=2))
    pd.testing.assert_frame_equal(first, again)
    for name in ("random", "stratified", "failed"):
        mine = first.index[first["review_strategy"] == name]
        theirs = other.index[other["review_strategy"] == name]
        assert list(mine) != list(theirs)
    assert first.index[first["review_strategy"] == "worst"].equals(
        other.index[other["review_strategy"] == "worst"])


@pytest.mark.parametrize(("spec", "column"), [
    ({"name": "margin", "share": 0.5}, "margin"),
    ({"name": "worst", "share": 0.5, "metric": "cidr"}, "cidr"),
    ({"name": "stratified", "share": 0.5, "column": "source"}, "source"),
])
def test_a_strategy_missing_its_column_is_skipped_with_a_warning(spec: dict, column: str):
    review = ReviewConfig(size=20, strategies=[spec, {"name": "random", "share": 0.5}])
    rows, warnings = sample(table(n=100, failed=0), review)
    assert per_strategy(rows) == {"random": 20}
    assert len(warnings) == 1
    assert spec["name"] in warnings[0] and repr(column) in warnings[0]
    assert "available: item_id, captions, background, cider, clip_score, status" in warnings[0]


def test_a_shortfall_goes_to_the_next_strategies_then_to_the_top_up():
    frame = table(n=200, failed=0)
    strict = {"name": "filter_top_k", "share": 0.5, "thresholds": {"clip_score": {"min": 0.99}}}
    passing = int((frame["clip_score"] >= 0.99).sum())
    rows, warnings = sample(frame, ReviewConfig(size=20, strategies=[
        strict, {"name": "random", "share": 0.5}]))
    assert per_strategy(rows) == {"filter_top_k": passing, "random": 20 - passing}
    assert "'filter_top_k' chose" in warnings[0]
    rows, _ = sample(frame, ReviewConfig(size=20, strategies=[
        {"name": "random", "share": 0.5}, strict]))
    assert per_strategy(rows) == {"random": 10, "filter_top_k": passing, "top_up": 10 - passing}


def test_failures_always_get_a_share_and_fill_in_for_missing_scored_rows():
    frame = table(n=100, failed=3)
    rows, _ = sample(frame, config(size=20, failed_share=0.0))
    assert per_strategy(rows)["failed"] == 1
    rows, _ = sample(frame, config(size=20, failed_share=0.5))
    assert per_strategy(rows)["failed"] == 3
    small = table(n=10, failed=4)
    rows, _ = sample(small, config(size=9, failed_share=0.1))
    assert len(rows) == 9 and per_strategy(rows)["failed"] == 3  # only 6 scored rows


def test_size_is_capped_and_zero_gives_an_empty_sample():
    rows, _ = sample(table(n=10, failed=2), config(size=50))
    assert len(rows) == 10 and rows["item_id"].is_unique
    empty, warnings = sample(table(n=10), config(size=0))
    assert empty.empty and "review_strategy" in empty.columns and warnings == []


def test_strategy_shares():
    def specs(*shares: float | None) -> list[SamplingStrategy]:
        return [SamplingStrategy(name="random", share=share) for share in shares]

    assert strategy_fractions(specs(0.5, None, None)) == [0.5, 0.25, 0.25]
    assert strategy_fractions(specs(0.2, 0.3)) == [0.4, 0.6]
    assert strategy_fractions(specs(0.4, 0.6, None)) == [0.4, 0.6, 0.0]
    assert strategy_quotas(specs(None, None, None), 10) == [4, 3, 3]
    assert strategy_quotas(specs(0.4, 0.3, 0.3), 180) == [72, 54, 54]


def test_unknown_strategy_fails_before_sampling():
    with pytest.raises(RegistryError, match="unknown sampling strategy 'worstest'"):
        sample(table(n=10), ReviewConfig(strategies=[{"name": "worstest"}]))


def test_original_index_labels_are_kept():
    frame = table(n=30, failed=2).set_index(pd.Index([5] * 30))
    rows, _ = sample(frame, config(size=10))
    assert len(rows) == 10 and set(rows.index) == {5} and rows["item_id"].is_unique


names = st.sampled_from(["worst", "random", "margin", "stratified", "disagreement"])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), failed=st.integers(0, 10), calibration=st.integers(0, 10),
       size=st.integers(0, 80), seed=st.integers(-5, 5),
       chosen=st.lists(names, min_size=1, max_size=4))
def test_invariants(n: int, failed: int, calibration: int, size: int, seed: int,
                    chosen: list[str]):
    failed, calibration = min(failed, n), min(calibration, n - min(failed, n))
    frame = table(n, failed, calibration, seed=abs(seed))
    review = ReviewConfig(size=size, seed=seed, strategies=[
        {"name": name, "column": "background", "metrics": ["cider", "clip_score"]}
        for name in chosen])
    rows, _ = sample(frame, review)
    eligible = n - calibration
    assert len(rows) == min(size, eligible) and rows["item_id"].is_unique
    assert set(rows["review_strategy"]) <= set(chosen) | {"failed", "top_up"}
    assert "calibration" not in set(rows["status"])
    assert (rows["status"] == "failed").sum() == (rows["review_strategy"] == "failed").sum()
    if failed and size:
        assert (rows["status"] == "failed").any()

