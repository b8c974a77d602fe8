"""The generalisation gap: every metric of one model on two splits of the same dataset (e.g.
train and test) and their difference ``other - evaluated`` with an unpaired bootstrap interval
(``tasks.stats.unpaired``: the splits share no items, so nothing is paired).

A positive gap on a higher-is-better metric means the model does better on the other split
(typically the training split: memorisation); the interval says whether the gap could be
sampling noise. Only metrics both runs computed the same way are compared.
"""

from __future__ import annotations

import math
from typing import Any

from tasks.comparison.pairs import common_estimates
from tasks.comparison.runs import RunData
from tasks.stats import BootstrapSettings
from tasks.stats.unpaired import unpaired_gap


def split_gap(evaluated: RunData, other: RunData, other_split: str,
              settings: BootstrapSettings) -> dict[str, Any]:
    """``{"split", "evaluated_run", "other_run", "metrics": {key: {evaluated, other, gap,
    ci_low, ci_high, higher_is_better}}, "not_compared": {key: why}}``."""
    estimates, not_compared, _ = common_estimates(evaluated, other, evaluated.table, other.table)
    directions = evaluated.higher_is_better | other.higher_is_better
    metrics = {}
    for key, estimate in estimates.items():
        gap = unpaired_gap(estimate, evaluated.table, other.table, settings)
        metrics[key] = {"evaluated": gap.a, "other": gap.b, "gap": gap.difference,
                        "ci_low": gap.interval.low, "ci_high": gap.interval.high,
                        "higher_is_better": directions.get(key, True)}
    return {"split": other_split, "evaluated_run": evaluated.summary(),
            "other_run": other.summary(), "metrics": metrics, "not_compared": not_compared,
            "bootstrap": {"resamples": settings.resamples, "level": settings.level,
                          "method": "percentile (unpaired)", "seed": settings.seed}}


def gap_metrics(document: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of a gap document: ``<split>.<metric>`` (the other split's value) and
    ``gap.<metric>`` with ``_ci_low`` / ``_ci_high`` (NaN bounds left out)."""
    split = document["split"]
    out: dict[str, float] = {}
    for key, row in document["metrics"].items():
        out[f"{split}.{key}"] = row["other"]
        out[f"gap.{key}"] = row["gap"]
        for bound in ("ci_low", "ci_high"):
            if not math.isnan(row[bound]):
                out[f"gap.{key}_{bound}"] = row[bound]
    return {k: v for k, v in out.items() if not math.isnan(v)}


def gap_lines(document: dict[str, Any]) -> list[str]:
    """A plain-text table: metric, evaluated split, other split, gap [interval]."""
    split = document["split"]
    rows = [("metric", "evaluated", split, "gap (other - evaluated)")]
    for key, row in document["metrics"].items():
        interval = (f" [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
                    if not math.isnan(row["ci_low"]) else "")
        rows.append((key, f"{row['evaluated']:.4f}", f"{row['other']:.4f}",
                     f"{row['gap']:+.4f}{interval}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
            for r in rows]
