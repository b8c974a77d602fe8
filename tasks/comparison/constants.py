"""Names shared by the comparison modules."""

from __future__ import annotations

import re

REPORT_JSON = "report/report.json"
PER_SAMPLE = "report/per_sample.parquet"
EXPERIMENT_PREFIX = "experiment:"
MODELS_PREFIX = "models:/"
KIND_TAG = "bifocal.run_kind"  # "comparison" on the runs the compare flow logs
DATASET_TAG = "bifocal.dataset_fingerprint"  # set on every evaluation run that scored
DEFAULT_ALPHA = 0.05
DEFAULT_PERMUTATIONS = 9999
CHANGED_ROWS = 10  # rows listed per direction
CONTEXT_COLUMNS = 4  # text columns shown beside a changed row
SEARCH_LIMIT = 10_000
UNSAFE_KEY = re.compile(r"[^/\w.\- ]")
