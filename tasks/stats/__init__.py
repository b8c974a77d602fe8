"""Statistics for "is the new checkpoint better?": seeded bootstrap intervals, paired tests.

Plain numpy/scipy functions over per-item arrays (no Prefect, no MLflow). Items are the unit of
resampling everywhere; see the module docstrings for each protocol:
:mod:`~tasks.stats.bootstrap` (intervals), :mod:`~tasks.stats.corpus` (sufficient-statistic
metrics), :mod:`~tasks.stats.rank` (AUROC, median), :mod:`~tasks.stats.paired` (comparisons).
"""

from tasks.stats.bootstrap import (
    BootstrapSettings,
    Interval,
    bootstrap_corpus,
    bootstrap_indices,
    bootstrap_mean,
)
from tasks.stats.corpus import (
    accuracy_statistic,
    binary_f1_statistic,
    bleu_statistic,
    confusion_contributions,
    macro_f1_statistic,
)
from tasks.stats.paired import (
    McNemarResult,
    PermutationResult,
    cohens_dz,
    holm,
    mcnemar,
    paired_bootstrap_corpus,
    paired_bootstrap_indices,
    paired_bootstrap_mean,
    paired_permutation_corpus,
    paired_permutation_mean,
    slice_vs_rest,
)
from tasks.stats.rank import (
    auroc,
    auroc_leave_one_out,
    auroc_of_resamples,
    bootstrap_auroc,
    bootstrap_median,
    median_leave_one_out,
    median_of_resamples,
)

__all__ = [
    "BootstrapSettings",
    "Interval",
    "McNemarResult",
    "PermutationResult",
    "accuracy_statistic",
    "auroc",
    "auroc_leave_one_out",
    "auroc_of_resamples",
    "binary_f1_statistic",
    "bleu_statistic",
    "bootstrap_auroc",
    "bootstrap_corpus",
    "bootstrap_indices",
    "bootstrap_mean",
    "bootstrap_median",
    "cohens_dz",
    "confusion_contributions",
    "holm",
    "macro_f1_statistic",
    "mcnemar",
    "median_leave_one_out",
    "median_of_resamples",
    "paired_bootstrap_corpus",
    "paired_bootstrap_indices",
    "paired_bootstrap_mean",
    "paired_permutation_corpus",
    "paired_permutation_mean",
    "slice_vs_rest",
]
