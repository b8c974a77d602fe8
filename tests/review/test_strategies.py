import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import rankdata

from tasks.config import SamplingStrategy
from tasks.registry import RegistryError
from tasks.review.strategies import (
    STRATEGIES,
    MissingColumnError,
    SamplingContext,
    StrategyError,
    get_strategy,
)
from tasks.review.strategies.stratified import equal_quotas, proportional_quotas


def context(seed: int = 0, metric: str = "cider", higher_is_worse: bool = False,
            **directions: bool) -> SamplingContext:
    return SamplingContext(metric, higher_is_worse, np.random.default_rng(seed), directions)


def run(name: str, frame: pd.DataFrame, n: int, ctx: SamplingContext | None = None,
        **spec) -> list:
    strategy = get_strategy(name)
    return list(strategy(frame, n, SamplingStrategy(name=name, **spec), ctx or context()))


def scores(n: int = 60, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "cider": rng.random(n).round(1),  # rounded: ties
        "clip_score": rng.random(n),
        "i2t_rank": rng.integers(1, 50, n),
        "margin": rng.random(n),
        "background": rng.choice(["indoor", "outdoor", "studio"], n),
    }, index=np.arange(100, 100 + n))
    frame.loc[frame.index[::7], "cider"] = np.nan
    return frame


def expected_worst(values: pd.Series, n: int, high: bool) -> list:
    rows = [(-v if high else v, pos, label)
            for pos, (label, v) in enumerate(values.items()) if not np.isnan(v)]
    return [label for *_, label in sorted(rows)[:n]]


def test_registry_holds_every_strategy():
    assert STRATEGIES.names() == ["disagreement", "filter_top_k", "margin", "random",
                                  "stratified", "worst"]
    with pytest.raises(RegistryError, match="unknown sampling strategy 'best'"):
        get_strategy("best")


def test_random_is_seeded_unique_and_capped():
    frame = scores()
    first = run("random", frame, 10, context(seed=3))
    assert first == run("random", frame, 10, context(seed=3))
    assert first != run("random", frame, 10, context(seed=4))
    assert len(set(first)) == 10 and set(first) <= set(frame.index)
    assert sorted(run("random", frame, 500)) == list(frame.index)
    assert run("random", frame, 0) == [] and run("random", frame.iloc[:0], 5) == []


@pytest.mark.parametrize("high", [False, True])
def test_worst_picks_the_k_worst_skipping_nan_with_stable_ties(high: bool):
    frame = scores()
    chosen = run("worst", frame, 12, context(higher_is_worse=high))
    assert chosen == expected_worst(frame["cider"], 12, high)
    assert not frame.loc[chosen, "cider"].isna().any()


def test_worst_metric_and_direction_defaults():
    frame = scores()
    # a rank column other than the task's: higher is worse by name
    assert run("worst", frame, 5, metric="i2t_rank") == expected_worst(frame["i2t_rank"], 5, True)
    # the run's known direction beats the name rule; an explicit direction beats both
    ctx = context(margin=False)
    assert run("worst", frame, 5, ctx, metric="margin") == expected_worst(frame["margin"], 5, True)
    assert run("worst", frame, 5, ctx, metric="margin", higher_is_worse=False) == \
        expected_worst(frame["margin"], 5, False)
    assert len(run("worst", frame, 500)) == frame["cider"].notna().sum()


def test_worst_on_a_missing_or_text_column_raises_a_strategy_error():
    with pytest.raises(MissingColumnError, match="'cidr'.*available: cider, clip_score"):
        run("worst", scores(), 3, metric="cidr")
    with pytest.raises(StrategyError, match="not numeric"):
        run("worst", scores(), 3, metric="background")


def test_margin_picks_the_smallest_margins():
    frame = scores()
    frame.loc[frame.index[:5], "margin"] = np.nan
    assert run("margin", frame, 8) == expected_worst(frame["margin"], 8, False)
    assert run("margin", frame, 8, metric="clip_score") == \
        expected_worst(frame["clip_score"], 8, False)
    with pytest.raises(MissingColumnError, match="'margin'"):
        run("margin", frame.drop(columns="margin"), 8)


def strata_frame(sizes: dict[str | None, int]) -> pd.DataFrame:
    values = [value for value, count in sizes.items() for _ in range(count)]
    order = np.random.default_rng(0).permutation(len(values))
    return pd.DataFrame({"background": [values[i] for i in order]})


def counts(frame: pd.DataFrame, chosen: list) -> dict:
    return frame.loc[chosen, "background"].fillna("(missing)").value_counts().to_dict()


def test_stratified_proportional_uses_largest_remainders():
    frame = strata_frame({"a": 50, "b": 30, "c": 20, None: 10})
    chosen = run("stratified", frame, 20, column="background")
    # exact 9.09, 5.45, 3.64, 1.82: floors 9, 5, 3, 1 and the two largest remainders get one
    assert counts(frame, chosen) == {"a": 9, "b": 5, "c": 4, "(missing)": 2}
    assert len(set(chosen)) == 20


def test_stratified_equal_hands_a_small_strata_leftover_to_the_others():
    frame = strata_frame({"a": 50, "b": 30, "c": 3, None: 10})
    chosen = run("stratified", frame, 20, column="background", allocation="equal")
    got = counts(frame, chosen)
    assert got["c"] == 3 and sum(got.values()) == 20
    assert sorted(got[k] for k in ("a", "b", "(missing)")) == [5, 6, 6]


def test_stratified_takes_everything_when_n_exceeds_candidates_and_needs_a_column():
    frame = strata_frame({"a": 4, "b": 2})
    assert sorted(run("stratified", frame, 50, column="background")) == list(frame.index)
    with pytest.raises(StrategyError, match="needs column"):
        run("stratified", frame, 5)
    with pytest.raises(MissingColumnError, match="'source'.*available: background"):
        run("stratified", frame, 5, column="source")


@given(st.lists(st.integers(0, 40), min_size=1, max_size=8), st.integers(0, 400))
def test_quotas_fit_their_strata(sizes: list[int], n: int):
    array = np.array(sizes, dtype=np.int64)
    n = min(n, int(array.sum()))
    for quotas in (proportional_quotas(array, n), equal_quotas(array, n)):
        assert quotas.sum() == n and (quotas <= array).all() and (quotas >= 0).all()
    if array.sum():
        exact = array * n / array.sum()
        assert (np.abs(proportional_quotas(array, n) - exact) < 1).all()
    equal = equal_quotas(array, n)
    open_ = equal[equal < array]
    assert open_.size == 0 or equal.max() - open_.min() <= 1


def test_disagreement_picks_the_largest_rank_gaps():
    frame = scores()
    frame.loc[frame.index[3], "clip_score"] = np.nan
    chosen = run("disagreement", frame, 6, metrics=["clip_score", "i2t_rank"])
    both = frame.dropna(subset=["clip_score"])
    quality_clip = rankdata(both["clip_score"]) / len(both)
    quality_rank = rankdata(-both["i2t_rank"]) / len(both)  # a rank: lower is better
    gap = np.abs(quality_clip - quality_rank)
    expected = both.index[np.argsort(-gap, kind="stable")[:6]]
    assert chosen == list(expected)


def test_disagreement_needs_two_metrics():
    with pytest.raises(StrategyError, match="exactly two metrics"):
        run("disagreement", scores(), 3, metrics=["clip_score"])
    with pytest.raises(MissingColumnError, match="'bleu_4'"):
        run("disagreement", scores(), 3, metrics=["clip_score", "bleu_4"])


def test_filter_top_k_keeps_the_worst_within_thresholds():
    frame = scores()
    frame.loc[frame.index[1], "clip_score"] = np.nan
    thresholds = {"clip_score": {"min": 0.25}, "margin": {"min": 0.1, "max": 0.8}}
    chosen = run("filter_top_k", frame, 7, thresholds=thresholds)
    inside = frame[(frame["clip_score"] >= 0.25) & frame["margin"].between(0.1, 0.8)]
    assert chosen == expected_worst(inside["cider"], 7, False)
    assert run("filter_top_k", frame, 500, thresholds={"clip_score": {"min": 2.0}}) == []
    with pytest.raises(MissingColumnError, match="'clipscore'"):
        run("filter_top_k", frame, 3, thresholds={"clipscore": {"min": 0.2}})


def test_context_direction_rules():
    ctx = context(metric="i2t_rank", higher_is_worse=True, cider=True)
    assert ctx.worse_is_high("i2t_rank") and ctx.worse_is_high("best_t2i_rank")
    assert ctx.worse_is_high("t2i_rank_sum") and not ctx.worse_is_high("ranking")
    assert not ctx.worse_is_high("cider") and ctx.worse_is_high("cider", explicit=True)
    assert not ctx.worse_is_high("clip_score")
