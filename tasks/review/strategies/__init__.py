"""Sampling strategies for human review. Every module in this package registers one strategy on
import (the protocol is in :mod:`tasks.review.strategies.base`); adding a strategy is one module
and its test."""

from tasks.review.strategies.base import (
    STRATEGIES,
    MissingColumnError,
    SamplingContext,
    Strategy,
    StrategyError,
    get_strategy,
    register_strategy,
)

__all__ = ["STRATEGIES", "MissingColumnError", "SamplingContext", "Strategy", "StrategyError",
           "get_strategy", "register_strategy"]
