"""Suites: several models x several datasets evaluated as one unit (plain logic, no Prefect).

``SuiteConfig`` is the suite flow's parameter (and its Prefect UI form). ``expand_suite`` turns
it into one ``EvalConfig`` per model x dataset, ``check_suite`` adds ``tasks.plan``'s registry
checks; errors name the suite entry (``models[1].path: Field required``). ``build_leaderboard``
puts the evaluations side by side and marks the best model per dataset and metric.
"""

from __future__ import annotations

from tasks.suite.config import (
    NAME_PATTERN,
    SuiteConfig,
    SuiteDataset,
    SuiteModel,
    apply_suite_overrides,
    build_suite,
    check_suite,
    expand_suite,
    label_of,
    load_suite,
    split_label,
    suite_params,
)
from tasks.suite.leaderboard import (
    BASE_COLUMNS,
    TAIL_COLUMNS,
    Outcome,
    build_leaderboard,
    default_higher_is_better,
    display_rows,
    leaderboard_lines,
    leaderboard_markdown,
    leaderboard_metrics,
    leaderboard_records,
    metric_cell,
    metric_directions,
    summary_lines,
)

__all__ = [
    "BASE_COLUMNS",
    "NAME_PATTERN",
    "Outcome",
    "SuiteConfig",
    "SuiteDataset",
    "SuiteModel",
    "TAIL_COLUMNS",
    "apply_suite_overrides",
    "build_leaderboard",
    "build_suite",
    "check_suite",
    "default_higher_is_better",
    "display_rows",
    "expand_suite",
    "label_of",
    "leaderboard_lines",
    "leaderboard_markdown",
    "leaderboard_metrics",
    "leaderboard_records",
    "load_suite",
    "metric_cell",
    "metric_directions",
    "split_label",
    "suite_params",
    "summary_lines",
]
