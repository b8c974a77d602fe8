"""What a review round says: human metrics, how far the automatic metrics agree with people, and
how far people agree with each other.

Protocol (intervals from the run's ``statistics`` settings; the unit of resampling is the item):

- per item, a rating field is the mean over its raters; a choice field is the share of raters
  who gave its first choice (``correct`` in the default schema: "judged correct");
- human metrics: ``human_<field>_mean`` (ratings) and ``human_<field>_<first choice>_share``
  (choices), with bootstrap CIs, overall, per sampling strategy (``.strategy.<name>``) and per
  value of the run's slice columns (``.slice.<column>.<value>``);
- human–automatic agreement, for every numeric per-sample metric of the reviewed items:
  Spearman's rho and Kendall's tau-b against each rating field (``spearman.<metric>.<field>``,
  ``kendall.<metric>.<field>``), and for two-choice fields the AUROC of the metric at
  predicting the first choice by majority vote (ties left out), oriented by the metric's
  direction (``auroc.<metric>.<field>``);
- inter-rater agreement per field when items have several raters: Cohen's kappa (exactly two
  raters; quadratic-weighted for ratings) and Krippendorff's alpha (ordinal for ratings,
  nominal for choices), with the items and raters counted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import RatingField
from tasks.metrics.base import safe_key_part
from tasks.review.queue import NOT_SCORES
from tasks.review.store import ReviewRun
from tasks.stats.agreement import Agreement, FieldKind, auroc, inter_rater, kendall, spearman
from tasks.stats.bootstrap import BootstrapSettings, Interval, bootstrap_mean

Metrics = dict[str, float]


def settings_of(manifest: dict[str, Any]) -> BootstrapSettings:
    stats = manifest.get("statistics") or {}
    return BootstrapSettings(int(stats.get("bootstrap", 1000)), float(stats.get("level", 0.95)),
                             stats.get("method", "percentile"), int(stats.get("seed", 0)))


def item_values(ratings: pd.DataFrame, schema: list[RatingField]) -> pd.DataFrame:
    """One row per reviewed item: each rating field's mean, each choice field's first-choice
    share over the item's raters."""
    columns = {}
    for field in schema:
        if field.type == "rating":
            values = pd.to_numeric(ratings[field.name], errors="coerce")
        elif field.type == "choice":
            answered = ratings[field.name].notna() & (ratings[field.name] != "")
            values = (ratings[field.name] == field.choices[0]).astype(float).where(answered)
        else:
            continue
        columns[field.name] = values.groupby(ratings["review_id"]).mean()
    return pd.DataFrame(columns)


def human_key(field: RatingField) -> str:
    if field.type == "rating":
        return f"human_{field.name}_mean"
    return f"human_{field.name}_{safe_key_part(field.choices[0])}_share"


def with_interval(key: str, interval: Interval) -> Metrics:
    return {key: interval.estimate, f"{key}_ci_low": interval.low,
            f"{key}_ci_high": interval.high}


def human_metrics(items: pd.DataFrame, groups: dict[str, pd.Series], schema: list[RatingField],
                  settings: BootstrapSettings) -> Metrics:
    """Each field's mean with its CI, overall and within each group (suffix -> item mask)."""
    out: Metrics = {}
    for field in (f for f in schema if f.name in items.columns):
        key = human_key(field)
        out |= with_interval(key, bootstrap_mean(items[field.name], settings))
        for suffix, mask in groups.items():
            out |= with_interval(f"{key}{suffix}", bootstrap_mean(
                items.loc[mask.reindex(items.index, fill_value=False), field.name], settings))
    return out


def item_groups(sample: pd.DataFrame, slices: list[str]) -> dict[str, pd.Series]:
    """Key suffix -> boolean mask over review ids: per strategy, per slice value."""
    groups = {f".strategy.{safe_key_part(str(s))}": sample["review_strategy"] == s
              for s in sample["review_strategy"].unique()}
    for column in (c for c in slices if c in sample.columns):
        values = sample[column].astype(str)
        groups |= {f".slice.{safe_key_part(column)}.{safe_key_part(v)}": values == v
                   for v in values.unique()}
    return groups


def automatic_metrics(sample: pd.DataFrame) -> list[str]:
    """Numeric per-sample columns that are metrics (not ids, statuses or booleans)."""
    return [c for c in sample.columns if c not in NOT_SCORES and c != "review_strategy"
            and pd.api.types.is_numeric_dtype(sample[c])
            and not pd.api.types.is_bool_dtype(sample[c])]


def higher_is_better(metric: str, directions: dict[str, bool]) -> bool:
    """The metric's direction from the run; per-sample ranks are better low."""
    return directions.get(metric, "rank" not in metric)


def metric_agreement(sample: pd.DataFrame, items: pd.DataFrame, schema: list[RatingField],
                     directions: dict[str, bool], settings: BootstrapSettings
                     ) -> list[tuple[str, Agreement]]:
    """(key, Agreement) for every metric x field pair."""
    found: list[tuple[str, Agreement]] = []
    aligned = sample.reindex(items.index)
    for metric in automatic_metrics(sample):
        values = aligned[metric].to_numpy(dtype=float)
        for field in (f for f in schema if f.name in items.columns):
            human = items[field.name].to_numpy(dtype=float)
            if field.type == "rating":
                found.append((f"spearman.{metric}.{field.name}",
                              spearman(values, human, settings)))
                found.append((f"kendall.{metric}.{field.name}", kendall(values, human, settings)))
            elif len(field.choices) == 2:
                found.append((f"auroc.{metric}.{field.name}", auroc(
                    values, _majority(human), higher_is_better(metric, directions), settings)))
    return found


def _majority(shares: np.ndarray) -> list[bool | None]:
    return [None if math.isnan(s) or s == 0.5 else bool(s > 0.5) for s in shares]


def rater_agreement(ratings: pd.DataFrame, schema: list[RatingField],
                    settings: BootstrapSettings) -> dict[str, dict[str, Any]]:
    """Per rating/choice field: kappa, alpha, pairable items and raters."""
    out = {}
    for field in schema:
        if field.type == "text":
            continue
        rows = ratings[["review_id", "reviewer", field.name]].dropna()
        rows = rows[rows[field.name] != ""]
        kind: FieldKind = "rating" if field.type == "rating" else "choice"
        out[field.name] = inter_rater(rows, kind, settings, value_col=field.name)
    return out


def rater_metrics(raters: dict[str, dict[str, Any]]) -> Metrics:
    out: Metrics = {}
    for name, result in raters.items():
        out[f"interrater_items.{name}"] = result["pairable_items"]
        for key, stat in (("kappa", result["cohen_kappa"]), ("alpha",
                                                             result["krippendorff_alpha"])):
            if stat is not None and result["pairable_items"]:
                out |= _agreement_metrics(f"{key}.{name}", stat)
    return out


def _agreement_metrics(key: str, stat: dict[str, Any]) -> Metrics:
    nan = float("nan")
    return {key: _num(stat["value"], nan), f"{key}_ci_low": _num(stat["ci_low"], nan),
            f"{key}_ci_high": _num(stat["ci_high"], nan)}


def _num(value: Any, default: float) -> float:
    return default if value is None else float(value)


def review_results(run: ReviewRun, ratings: pd.DataFrame) -> tuple[Metrics, dict[str, Any]]:
    """The round's MLflow metrics and its agreement.json document."""
    schema, manifest = run.schema, run.manifest
    settings = settings_of(manifest)
    sample = run.sample.assign(review_id=run.sample[manifest["row_key"]].astype(str))
    sample = sample.drop_duplicates("review_id").set_index("review_id")
    items = item_values(ratings, schema)
    groups = item_groups(sample.loc[sample.index.isin(items.index)], manifest.get("slices", []))
    pairs = metric_agreement(sample, items, schema, manifest.get("higher_is_better", {}),
                             settings)
    raters = rater_agreement(ratings, schema, settings)
    metrics = {"review_items": float(len(items)), "review_ratings": float(len(ratings)),
               "review_raters": float(ratings["reviewer"].nunique())}
    human = human_metrics(items, groups, schema, settings)
    metrics |= human
    for key, stat in pairs:
        metrics |= _agreement_metrics(key, stat.to_json())
    metrics |= rater_metrics(raters)
    document = {"run_id": run.run_id, "statistics": manifest.get("statistics"),
                "counts": {k: int(v) for k, v in metrics.items() if k.startswith("review_")},
                "human": _finite(human),
                "metric_agreement": {key: stat.to_json() for key, stat in pairs},
                "inter_rater": raters}
    return {k: v for k, v in metrics.items() if not math.isnan(v)}, document


def _finite(metrics: Metrics) -> dict[str, float | None]:
    return {k: None if math.isnan(v) else v for k, v in metrics.items()}


def summary_lines(document: dict[str, Any], top: int = 8) -> list[str]:
    """A short text summary: counts, human metrics, the strongest metric agreements, raters."""
    counts = document["counts"]
    lines = [f"reviewed items: {counts['review_items']}, ratings: {counts['review_ratings']}, "
             f"reviewers: {counts['review_raters']}", "", "human metrics:"]
    human = document["human"]
    for key in (k for k in human if "." not in k and not k.endswith(("_ci_low", "_ci_high"))):
        lines.append(f"  {key:<40} {_fmt(human[key])} {_ci(human, key)}")
    lines += ["", "metric vs human (strongest first):"]
    ranked = sorted(document["metric_agreement"].items(), key=_strength, reverse=True)
    for key, stat in ranked[:top]:
        lines.append(f"  {key:<40} {_fmt(stat['value'])} [{_fmt(stat['ci_low'])}, "
                     f"{_fmt(stat['ci_high'])}] n={stat['n']}")
    lines += ["", "inter-rater:"]
    for name, result in document["inter_rater"].items():
        alpha, kappa = result["krippendorff_alpha"], result["cohen_kappa"]
        lines.append(f"  {name:<14} items with 2+ raters: {result['pairable_items']}, raters: "
                     f"{result['raters']}, alpha {_fmt(alpha['value'])}"
                     + (f", kappa {_fmt(kappa['value'])}" if kappa else ""))
    return lines


def _strength(entry: tuple[str, dict[str, Any]]) -> float:
    value = entry[1]["value"]
    if value is None:
        return -1.0
    return abs(value - 0.5) * 2 if entry[0].startswith("auroc.") else abs(value)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(values: dict[str, Any], key: str) -> str:
    low, high = values.get(f"{key}_ci_low"), values.get(f"{key}_ci_high")
    return "" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"



def scatter_panels(run: ReviewRun, ratings: pd.DataFrame, document: dict[str, Any],
                   field: str, count: int = 3) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
    """The ``count`` metrics whose Spearman rho with the rating field ``field`` is strongest:
    (metric, per-item metric values, per-item mean ratings, caption) for a scatter plot."""
    prefix, suffix = "spearman.", f".{field}"
    ranked = sorted(((key[len(prefix):-len(suffix)], stat["value"]) for key, stat in
                     document["metric_agreement"].items() if key.startswith(prefix)
                     and key.endswith(suffix) and stat["value"] is not None),
                    key=lambda pair: -abs(pair[1]))[:count]
    items = item_values(ratings, run.schema)
    sample = run.sample.assign(review_id=run.sample[run.manifest["row_key"]].astype(str))
    metric = sample.drop_duplicates("review_id").set_index("review_id").reindex(items.index)
    return [(name, metric[name].to_numpy(dtype=float), items[field].to_numpy(dtype=float),
             f"Spearman rho {rho:.2f}") for name, rho in ranked]
