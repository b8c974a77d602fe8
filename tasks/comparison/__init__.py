"""Paired comparison of evaluation runs stored in MLflow (plain logic, no Prefect).

Each evaluation run holds ``report/report.json`` (metrics, ``estimates``, ``row_key``,
``headline``, ``higher_is_better``, ``fingerprints``, ``config``) and
``report/per_sample.parquet`` (one row per item, or per pair for matching). Run A (the first, the
baseline) is compared with every other run B: rows are aligned on the row key, every metric both
runs can rebuild from their per-sample columns is compared with
``tasks.stats.compare.compare_tables`` (delta B - A, paired bootstrap CI, permutation or McNemar
p-value, effect size, Holm across the compared metrics), and the rows that changed most are
listed. Runs evaluated on different datasets (dataset fingerprint) are refused unless forced;
forced, the rows both runs scored are compared and the result says so.

Run selectors: an MLflow run id; ``experiment:NAME`` (with an optional MLflow search filter,
e.g. ``tags.bifocal.task = 'retrieval'``) for every finished evaluation run of the experiment,
oldest first; ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` for the run a registered model
version was created from.

Modules: ``runs`` (selectors, loading from MLflow), ``pairs`` (one comparison),
``render`` (comparison.json / .md, the stdout table, MLflow metrics).
"""

from __future__ import annotations

from tasks.comparison.constants import (
    CHANGED_ROWS,
    CONTEXT_COLUMNS,
    DATASET_TAG,
    DEFAULT_ALPHA,
    DEFAULT_PERMUTATIONS,
    EXPERIMENT_PREFIX,
    KIND_TAG,
    MODELS_PREFIX,
    PER_SAMPLE,
    REPORT_JSON,
    SEARCH_LIMIT,
    UNSAFE_KEY,
)
from tasks.comparison.pairs import (
    PairComparison,
    changed_rows,
    clean_json,
    common_estimates,
    compare_runs,
    reconcile,
    row_values,
    significant,
    verdict,
)
from tasks.comparison.render import (
    HEADERS,
    comparison_document,
    comparison_metrics,
    format_p,
    log_metric_steps,
    metric_cells,
    metric_key,
    render_markdown,
    render_text,
    settings_json,
    table_rows,
)
from tasks.comparison.runs import (
    ComparisonError,
    RunData,
    label,
    load_run,
    model_version,
    parse_model_uri,
    registry_client,
    resolve_runs,
    search_evaluation_runs,
)

__all__ = [
    "CHANGED_ROWS",
    "CONTEXT_COLUMNS",
    "ComparisonError",
    "DATASET_TAG",
    "DEFAULT_ALPHA",
    "DEFAULT_PERMUTATIONS",
    "EXPERIMENT_PREFIX",
    "HEADERS",
    "KIND_TAG",
    "MODELS_PREFIX",
    "PER_SAMPLE",
    "PairComparison",
    "REPORT_JSON",
    "RunData",
    "SEARCH_LIMIT",
    "UNSAFE_KEY",
    "changed_rows",
    "clean_json",
    "common_estimates",
    "compare_runs",
    "comparison_document",
    "comparison_metrics",
    "format_p",
    "label",
    "load_run",
    "log_metric_steps",
    "metric_cells",
    "metric_key",
    "model_version",
    "parse_model_uri",
    "reconcile",
    "registry_client",
    "render_markdown",
    "render_text",
    "resolve_runs",
    "row_values",
    "search_evaluation_runs",
    "settings_json",
    "significant",
    "table_rows",
    "verdict",
]
