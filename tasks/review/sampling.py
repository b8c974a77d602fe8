"""Pick the items for human review: failures plus the configured sampling strategies.

Protocol of :func:`select_for_review`:

- eligible rows: ``status`` ``scored`` (candidates of the strategies) or ``failed`` (failed
  inference or scoring); anything else (matching's ``calibration`` rows) is never sampled;
- size: ``review.size``, or ``ceil(fraction × eligible rows)`` when ``fraction`` is set; never
  more than the eligible rows;
- failures: ``max(1, round(failed_share × size))`` when any failed, at most the failures, and
  more when the scored rows cannot fill the rest; drawn at random;
- the rest is split by share: strategies without a share split ``1 − Σ shares`` equally; when
  every strategy has a share and they add up to less than 1 they are scaled up to 1; counts are
  rounded by largest remainder (equal remainders favour the earlier strategy);
- strategies run in the order given, each on the scored rows no earlier one chose; one that
  chooses fewer than its quota (too few candidates, or skipped because a column it needs is
  missing) leaves the shortfall to the next ones; what the last leaves is drawn at random
  (``top_up``), so the size is met whenever enough rows exist;
- every random choice comes from ``review.seed`` (one stream per strategy, one for failures,
  one for the top-up): the same seed gives the same sample;
- rows come back in the order they were chosen: failures, then each strategy's choices, then
  the top-up; ``review_strategy`` names what chose each row (``failed`` for failures).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from tasks.config import ReviewConfig, SamplingStrategy
from tasks.review.strategies import SamplingContext, Strategy, StrategyError, get_strategy
from tasks.review.strategies.base import draw

FAILED = "failed"
TOP_UP = "top_up"


@dataclass
class _Sample:
    """Rows chosen so far (positional labels), what chose each, and warnings."""

    labels: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, labels: pd.Index, name: str) -> None:
        self.labels.extend(int(label) for label in labels)
        self.names.extend([name] * len(labels))

    def free(self, pool: pd.Index) -> pd.Index:
        return pool[~pool.isin(self.labels)]


def select_for_review(table: pd.DataFrame, config: ReviewConfig, default_metric: str,
                      default_higher_is_worse: bool,
                      higher_is_better: Mapping[str, bool] | None = None,
                      ) -> tuple[pd.DataFrame, list[str]]:
    """The review sample (the table's rows and columns plus ``review_strategy``) and warnings.

    ``default_metric`` / ``default_higher_is_worse``: the task's review column and direction;
    ``higher_is_better``: directions of other per-sample columns where known. An unknown
    strategy name raises ``RegistryError`` before anything is drawn.
    """
    strategies = [get_strategy(spec.name) for spec in config.strategies]
    frame = table.reset_index(drop=True)
    scored = frame.index[frame["status"] == "scored"]
    failed = frame.index[frame["status"] == FAILED]
    size = review_size(config, len(scored) + len(failed))
    sample = _Sample()
    if size:
        n_failed = failed_quota(config, size, len(failed), len(scored))
        sample.add(draw(failed, n_failed, _stream(config.seed, 0)), FAILED)
        context = SamplingContext(default_metric, default_higher_is_worse,
                                  _stream(config.seed, 1), higher_is_better or {})
        _fill(frame, scored, size - n_failed, config, strategies, context, sample)
    rows = table.iloc[sample.labels]
    names = pd.array(sample.names, dtype=str)
    return rows.assign(review_strategy=names), sample.warnings


def _fill(frame: pd.DataFrame, scored: pd.Index, total: int, config: ReviewConfig,
          strategies: list[Strategy], context: SamplingContext, sample: _Sample) -> None:
    """``total`` scored rows into ``sample``: the strategies in order, each given its quota
    plus what the ones before left, then a random top-up of what the last one left."""
    quotas = strategy_quotas(config.strategies, total)
    carry = 0
    for position, (spec, strategy, quota) in enumerate(
            zip(config.strategies, strategies, quotas, strict=True)):
        own = replace(context, rng=_stream(config.seed, position + 1))
        carry = _run(frame.loc[sample.free(scored)], quota + carry, spec, strategy, own, sample)
    top_up = _stream(config.seed, len(strategies) + 1)
    sample.add(draw(sample.free(scored), carry, top_up), TOP_UP)


def review_size(config: ReviewConfig, eligible: int) -> int:
    """``size``, or ``ceil(fraction × eligible)`` when ``fraction`` is set; at most
    ``eligible``."""
    wanted = config.size if config.fraction is None else math.ceil(config.fraction * eligible)
    return min(wanted, eligible)


def failed_quota(config: ReviewConfig, size: int, failed: int, scored: int) -> int:
    """Failures in a sample of ``size``: ``max(1, round(failed_share × size))`` when any failed,
    capped by the failures; more when the scored rows cannot fill the rest."""
    if not failed:
        return 0
    share = min(failed, max(1, round(config.failed_share * size)), size)
    return max(share, size - scored)


def strategy_quotas(strategies: list[SamplingStrategy], total: int) -> list[int]:
    """``total`` split by the strategies' fractions (:func:`strategy_fractions`), rounded by
    largest remainder; equal remainders favour the earlier strategy."""
    exact = np.round(np.array(strategy_fractions(strategies)) * total, 9)
    quotas = np.floor(exact).astype(np.int64)
    extra = np.argsort(-(exact - quotas), kind="stable")[: max(0, total - int(quotas.sum()))]
    quotas[extra] += 1
    return [int(q) for q in quotas]


def strategy_fractions(strategies: list[SamplingStrategy]) -> list[float]:
    """Each strategy's part of the size: its share; strategies without one split what the
    shares leave equally; when all have shares, they are scaled to add up to 1."""
    given = sum(s.share or 0.0 for s in strategies)
    free = sum(s.share is None for s in strategies)
    if not free:
        return [(s.share or 0.0) / given for s in strategies]
    left = max(0.0, 1.0 - given) / free
    return [left if s.share is None else s.share for s in strategies]


def _run(candidates: pd.DataFrame, want: int, spec: SamplingStrategy,
         strategy: Strategy, context: SamplingContext, sample: _Sample) -> int:
    """Run one strategy into ``sample``; returns the shortfall it leaves to the next."""
    try:
        picked = _checked(pd.Index(strategy(candidates, want, spec, context)), candidates,
                          want, spec.name)
    except StrategyError as error:
        sample.warnings.append(f"review strategy {spec.name!r} skipped: {error}; its {want} "
                               "item(s) go to the next strategies or the random top-up")
        return want
    sample.add(picked, spec.name)
    if len(picked) < want:
        sample.warnings.append(
            f"review strategy {spec.name!r} chose {len(picked)} of {want} item(s); the rest "
            "goes to the next strategies or the random top-up")
    return want - len(picked)


def _checked(picked: pd.Index, candidates: pd.DataFrame, want: int, name: str) -> pd.Index:
    """A strategy's choice, or ``ValueError`` when it breaks the protocol."""
    if len(picked) > want or picked.has_duplicates or not picked.isin(candidates.index).all():
        raise ValueError(f"review strategy {name!r} returned {len(picked)} label(s) for "
                         f"{want}, repeated or outside its candidates")
    return picked


def _stream(seed: int, stream: int) -> np.random.Generator:
    """Random stream ``stream`` of ``seed`` (negative seeds wrap to 64 bits)."""
    return np.random.default_rng(np.random.SeedSequence(seed % 2**64, spawn_key=(stream,)))

