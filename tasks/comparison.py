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
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.stats.bootstrap import BootstrapSettings
from tasks.stats.compare import MetricComparison, align, compare_tables
from tasks.stats.estimates import Estimate
from tasks.tracking import mlflow_log as ml

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


class ComparisonError(ValueError):
    """Runs that cannot be found or compared; the message says why and what to do."""


# ---- runs -----------------------------------------------------------------------------------


@dataclass
class RunData:
    """One evaluation run: its report.json and per-sample table, read from MLflow."""

    run_id: str
    run_name: str
    experiment_id: str
    report: dict[str, Any]
    table: pd.DataFrame
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return str(self.report.get("task", self.tags.get("bifocal.task", "")))

    @property
    def dataset_fingerprint(self) -> str | None:
        value = (self.report.get("fingerprints") or {}).get("dataset") or self.tags.get(DATASET_TAG)
        return str(value) if value else None

    @property
    def model_fingerprint(self) -> str | None:
        value = (self.report.get("fingerprints") or {}).get("model")
        return str(value) if value else self.tags.get("bifocal.model_fingerprint")

    @property
    def row_key(self) -> str:
        key = self.report.get("row_key")
        if key:
            return str(key)
        return "pair_id" if "pair_id" in self.table.columns else "item_id"

    @property
    def estimates(self) -> dict[str, Estimate]:
        return {key: Estimate.from_json(value)
                for key, value in (self.report.get("estimates") or {}).items()}

    @property
    def higher_is_better(self) -> dict[str, bool]:
        return {k: bool(v) for k, v in (self.report.get("higher_is_better") or {}).items()}

    @property
    def headline(self) -> str | None:
        return self.report.get("headline") or None

    @property
    def model_path(self) -> str | None:
        model = (self.report.get("config") or {}).get("model") or {}
        return model.get("path") or self.tags.get("bifocal.model_path")

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_name": self.run_name,
                "experiment_id": self.experiment_id, "task": self.task,
                "model_path": self.model_path,
                "dataset_fingerprint": self.dataset_fingerprint,
                "model_fingerprint": self.model_fingerprint}


def label(run: RunData) -> str:
    return f"{run.run_name} ({run.run_id[:8]})"


def load_run(uri: str, run_id: str) -> RunData:
    """report.json and per_sample.parquet of an evaluation run, from its MLflow artifacts."""
    client = ml.client(uri)
    try:
        run = client.get_run(run_id)
    except Exception as error:
        raise ComparisonError(f"run {run_id!r} not found at {uri}: {_mlflow_message(error)}"
                              ) from None
    with tempfile.TemporaryDirectory(prefix="bifocal-compare-") as folder:
        try:
            report_path = client.download_artifacts(run_id, REPORT_JSON, folder)
            table_path = client.download_artifacts(run_id, PER_SAMPLE, folder)
        except Exception as error:
            raise ComparisonError(
                f"run {run_id} ({run.info.run_name}) has no {REPORT_JSON} and {PER_SAMPLE} "
                f"artifacts: is it a finished evaluation run? ({_mlflow_message(error)})"
            ) from None
        report = json.loads(Path(report_path).read_text())
        table = pd.read_parquet(table_path)
    return RunData(run_id, run.info.run_name or run_id, run.info.experiment_id, report, table,
                   dict(run.data.tags))


def _mlflow_message(error: Exception) -> str:
    return str(getattr(error, "message", None) or error).splitlines()[0][:300]


# ---- selectors --------------------------------------------------------------------------------


def resolve_runs(uri: str, selectors: list[str], filter_string: str | None = None) -> list[str]:
    """Run ids of the selectors, in order (first = baseline), duplicates dropped."""
    if filter_string and not any(s.startswith(EXPERIMENT_PREFIX) for s in selectors):
        raise ComparisonError("a filter applies to experiment:NAME selectors; none was given")
    ids: list[str] = []
    for selector in selectors:
        selector = selector.strip()
        if selector.startswith(EXPERIMENT_PREFIX):
            runs = search_evaluation_runs(uri, selector[len(EXPERIMENT_PREFIX):], filter_string)
            if not runs:
                where = f" matching {filter_string!r}" if filter_string else ""
                raise ComparisonError(f"no finished evaluation run in {selector}{where}")
            ids += [run.info.run_id for run in runs]
        elif selector.startswith(MODELS_PREFIX):
            version = model_version(uri, selector)
            if version is None:
                raise ComparisonError(f"{selector}: no such registered model version")
            if not version.run_id:
                raise ComparisonError(f"{selector}: model version {version.version} is linked "
                                      "to no run")
            ids.append(version.run_id)
        else:
            ids.append(selector)
    return list(dict.fromkeys(ids))


def search_evaluation_runs(uri: str, experiment: str, filter_string: str | None = None,
                           order_by: list[str] | None = None) -> list[Any]:
    """Finished evaluation runs of an experiment (not comparison or suite runs), oldest first."""
    from mlflow.exceptions import MlflowException

    client = ml.client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ComparisonError(f"no MLflow experiment named {experiment!r} at {uri}")
    clauses = ["attributes.status = 'FINISHED'"] + ([filter_string] if filter_string else [])
    runs: list[Any] = []
    token = None
    try:
        while len(runs) < SEARCH_LIMIT:
            page = client.search_runs([found.experiment_id], " and ".join(clauses),
                                      order_by=order_by or ["attributes.start_time ASC"],
                                      max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
    except MlflowException as error:
        raise ComparisonError(f"cannot search experiment {experiment!r}: "
                              f"{_mlflow_message(error)}") from None
    return [run for run in runs if DATASET_TAG in run.data.tags
            and run.data.tags.get(KIND_TAG) != "comparison"]


def parse_model_uri(selector: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS, None); ``models:/NAME/3`` -> (NAME, None, "3")."""
    body = selector[len(MODELS_PREFIX):] if selector.startswith(MODELS_PREFIX) else selector
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in body:
        name, version = body.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    raise ComparisonError(f"{selector!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")


def model_version(uri: str, selector: str) -> Any | None:
    """The registered model version a ``models:/`` selector names, or None when the model,
    alias or version does not exist (yet)."""
    name, alias, version = parse_model_uri(selector)
    client = registry_client(uri)
    try:
        registered = client.get_registered_model(name)
    except Exception as error:
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if alias is not None:
        if alias not in (registered.aliases or {}):
            return None
        return client.get_model_version_by_alias(name, alias)
    try:
        return client.get_model_version(name, version)
    except Exception as error:
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def registry_client(uri: str) -> Any:
    """A client whose model registry is the tracking store (works with sqlite:// stores)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# ---- one pair ---------------------------------------------------------------------------------


@dataclass
class PairComparison:
    """Run B (candidate) against run A (baseline), metric by metric."""

    baseline: dict[str, Any]
    candidate: dict[str, Any]
    row_key: str
    rows: dict[str, int]  # baseline_scored, candidate_scored, compared
    same_dataset: bool
    forced: bool
    metrics: list[MetricComparison]
    not_compared: dict[str, str]
    notes: list[str]
    headline: str | None
    changed: dict[str, Any] | None
    alpha: float = DEFAULT_ALPHA

    def metric(self, key: str) -> MetricComparison | None:
        return next((m for m in self.metrics if m.metric == key), None)

    def to_json(self) -> dict[str, Any]:
        metrics = [m.to_json() | {"improved": m.improved, "verdict": verdict(m, self.alpha),
                                  "significant": significant(m, self.alpha)}
                   for m in self.metrics]
        return clean_json({
            "baseline": self.baseline, "candidate": self.candidate, "row_key": self.row_key,
            "rows": self.rows, "same_dataset": self.same_dataset, "forced": self.forced,
            "notes": self.notes, "alpha": self.alpha, "headline": self.headline,
            "metrics": metrics, "not_compared": self.not_compared, "changed_rows": self.changed,
        })


def significant(result: MetricComparison, alpha: float) -> bool:
    return bool(result.p_holm < alpha)  # NaN (untestable) is never significant


def verdict(result: MetricComparison, alpha: float) -> str:
    """↑ significantly better, ↓ significantly worse (Holm-adjusted p < alpha), = otherwise."""
    if not significant(result, alpha) or result.delta == 0:
        return "="
    return "↑" if result.improved else "↓"


def compare_runs(a: RunData, b: RunData, settings: BootstrapSettings,
                 permutations: int = DEFAULT_PERMUTATIONS, force: bool = False,
                 alpha: float = DEFAULT_ALPHA, only: list[str] | None = None
                 ) -> PairComparison:
    """B against A on the rows both scored; refuses different datasets unless ``force``.
    ``only`` restricts the compared metrics (the Holm family) to these keys."""
    if a.task and b.task and a.task != b.task:
        raise ComparisonError(f"{label(a)} is a {a.task} run and {label(b)} a {b.task} run: "
                              "only runs of the same task can be compared")
    if a.row_key != b.row_key:
        raise ComparisonError(f"row keys differ ({a.row_key} vs {b.row_key}): the per-sample "
                              "tables cannot be aligned")
    key = a.row_key
    for run in (a, b):
        if key not in run.table.columns:
            raise ComparisonError(f"per_sample.parquet of {label(run)} has no {key!r} column")
    table_a, table_b = _keyed(a.table, key), _keyed(b.table, key)
    rows_a, rows_b = align(table_a, table_b, key)
    rows = {"baseline_scored": _scored_count(table_a, key),
            "candidate_scored": _scored_count(table_b, key), "compared": len(rows_a)}
    fp_a, fp_b = a.dataset_fingerprint, b.dataset_fingerprint
    same = fp_a is not None and fp_a == fp_b
    notes: list[str] = []
    if not same:
        where = (f"dataset fingerprints differ (baseline {_short(fp_a)}, candidate "
                 f"{_short(fp_b)})")
        if not force:
            raise ComparisonError(
                f"{label(a)} and {label(b)} were not evaluated on the same dataset: {where}. "
                f"A paired comparison needs the same items; force it (--force) to compare the "
                f"{rows['compared']} rows both runs scored.")
        notes.append(f"{where}; forced: compared only the {rows['compared']} rows scored in "
                     f"both runs (baseline scored {rows['baseline_scored']}, candidate "
                     f"{rows['candidate_scored']})")
    elif rows["compared"] < max(rows["baseline_scored"], rows["candidate_scored"]):
        notes.append(f"rows scored in only one run were left out: compared {rows['compared']} "
                     f"(baseline scored {rows['baseline_scored']}, candidate "
                     f"{rows['candidate_scored']})")
    if rows["compared"] == 0:
        raise ComparisonError(f"no {key} is scored in both {label(a)} and {label(b)}")
    if a.model_fingerprint and a.model_fingerprint == b.model_fingerprint:
        notes.append("both runs evaluated the same model weights (same model fingerprint)")
    estimates, not_compared, estimate_notes = common_estimates(a, b, rows_a, rows_b)
    notes += estimate_notes
    if only is not None:
        estimates = {k: v for k, v in estimates.items() if k in only}
        if not estimates:
            reasons = "; ".join(f"{k}: {not_compared.get(k, 'not in both runs')}" for k in only)
            raise ComparisonError(f"none of {', '.join(only)} can be compared ({reasons})")
    if not estimates:
        reasons = "; ".join(f"{k}: {v}" for k, v in not_compared.items()) or "no estimates"
        raise ComparisonError(f"{label(a)} and {label(b)} share no metric that can be "
                              f"recomputed from per-sample rows ({reasons}); report.json needs "
                              "\"estimates\" (re-run the evaluation with this version)")
    directions = b.higher_is_better | a.higher_is_better
    results = compare_tables(rows_a, rows_b, estimates, directions, settings, permutations)
    headline = _headline(a, b, estimates)
    changed = None
    if headline is not None:
        changed = changed_rows(rows_a, rows_b, key, headline, estimates[headline],
                               directions.get(headline, not headline.endswith("_rank")))
    return PairComparison(a.summary(), b.summary(), key, rows, same, not same, results,
                          not_compared, notes, headline, changed, alpha)


def _keyed(table: pd.DataFrame, key: str) -> pd.DataFrame:
    return table.assign(**{key: table[key].astype(str)})


def _scored_count(table: pd.DataFrame, key: str) -> int:
    scored = table[table["status"] == "scored"] if "status" in table.columns else table
    return int(scored[key].nunique())


def _short(fingerprint: str | None) -> str:
    return f"{fingerprint[:12]}…" if fingerprint else "unknown"


def _headline(a: RunData, b: RunData, estimates: dict[str, Estimate]) -> str | None:
    for candidate in (a.headline, b.headline):
        if candidate in estimates:
            return candidate
    return next(iter(estimates), None)


def common_estimates(a: RunData, b: RunData, rows_a: pd.DataFrame, rows_b: pd.DataFrame
                     ) -> tuple[dict[str, Estimate], dict[str, str], list[str]]:
    """Estimates both runs have (and can read), the others with the reason, and notes."""
    ours, theirs = a.estimates, b.estimates
    compared: dict[str, Estimate] = {}
    not_compared: dict[str, str] = {}
    notes: list[str] = []
    for key in list(dict.fromkeys([*ours, *theirs])):
        if key not in theirs:
            not_compared[key] = "only the baseline run has it"
            continue
        if key not in ours:
            not_compared[key] = "only the candidate run has it"
            continue
        estimate = reconcile(ours[key], theirs[key])
        if estimate is None:
            not_compared[key] = (f"computed differently ({_describe(ours[key])} vs "
                                 f"{_describe(theirs[key])})")
            continue
        if estimate != ours[key]:
            notes.append(f"{key}: class lists differ between the runs; both are scored over "
                         "the union of their classes")
        needed = list(estimate.columns) + ([estimate.where[0]] if estimate.where else [])
        missing = [c for c in needed if c not in rows_a.columns or c not in rows_b.columns]
        if missing:
            not_compared[key] = f"per-sample column(s) missing: {', '.join(missing)}"
            continue
        compared[key] = estimate
    return compared, not_compared, notes


def reconcile(ours: Estimate, theirs: Estimate) -> Estimate | None:
    """One estimate for both runs: equal ones; confusion estimates over both class lists."""
    if ours == theirs:
        return ours
    if (ours.statistic, ours.columns, ours.where) != (theirs.statistic, theirs.columns,
                                                      theirs.where):
        return None
    if ours.statistic == "confusion":
        rest_a = {k: v for k, v in ours.options.items() if k != "classes"}
        rest_b = {k: v for k, v in theirs.options.items() if k != "classes"}
        if rest_a == rest_b:
            classes = list(dict.fromkeys([*map(str, ours.options.get("classes", [])),
                                          *map(str, theirs.options.get("classes", []))]))
            return Estimate(ours.statistic, ours.columns, rest_a | {"classes": classes},
                            ours.where)
    return None


def _describe(estimate: Estimate) -> str:
    return f"{estimate.statistic}({', '.join(estimate.columns)})"


# ---- rows that changed ----------------------------------------------------------------------


def row_values(estimate: Estimate, rows: pd.DataFrame) -> pd.Series | None:
    """Per-row values of a metric where it has them: the mean's column, correct/incorrect for
    accuracy-like confusion metrics, numerator / denominator of a ratio; None otherwise."""
    columns = list(estimate.columns)
    if estimate.statistic == "mean":
        return pd.to_numeric(rows[columns[0]], errors="coerce").astype(np.float64)
    if estimate.statistic == "confusion":
        truth, predicted = columns
        values = (rows[truth].astype(str) == rows[predicted].astype(str)).astype(np.float64)
        return values.where(rows[truth].notna() & rows[predicted].notna())
    if estimate.statistic == "ratio":
        numerator, denominator = (pd.to_numeric(rows[c], errors="coerce") for c in columns)
        return (numerator / denominator.where(denominator != 0)).astype(np.float64)
    return None


def changed_rows(rows_a: pd.DataFrame, rows_b: pd.DataFrame, key: str, metric: str,
                 estimate: Estimate, higher_is_better: bool, limit: int = CHANGED_ROWS
                 ) -> dict[str, Any]:
    """The rows where B gained or lost most on ``metric``: for hit/miss values the rows that
    flipped, otherwise the largest per-row differences (better = in the metric's direction)."""
    keep = np.ones(len(rows_a), dtype=bool)
    if estimate.where is not None:
        column, value = estimate.where
        keep &= (rows_a[column].astype(str) == value).to_numpy()
    a_values, b_values = row_values(estimate, rows_a), row_values(estimate, rows_b)
    if a_values is None or b_values is None:
        return {"metric": metric, "kind": "none", "gained": [], "lost": [], "gained_total": 0,
                "lost_total": 0, "reason": f"{estimate.statistic} has no per-row values"}
    x, y = a_values.to_numpy(), b_values.to_numpy()
    keep &= ~(np.isnan(x) | np.isnan(y))
    binary = bool(np.isin(np.r_[x[keep], y[keep]], (0.0, 1.0)).all())
    gain = (y - x) if higher_is_better else (x - y)
    gain = np.where(keep, gain, 0.0)
    context = _context_columns(rows_a, key, estimate)

    def listed(mask: np.ndarray, descending: bool) -> list[dict[str, Any]]:
        index = np.flatnonzero(mask)
        order = np.argsort(-gain[index] if descending else gain[index], kind="stable")
        return [_row(rows_a, i, key, x[i], y[i], context) for i in index[order][:limit]]

    gained, lost = keep & (gain > 0), keep & (gain < 0)
    return {"metric": metric, "kind": "flips" if binary else "difference",
            "gained": listed(gained, True), "lost": listed(lost, False),
            "gained_total": int(gained.sum()), "lost_total": int(lost.sum())}


def _context_columns(rows: pd.DataFrame, key: str, estimate: Estimate) -> list[str]:
    skip = {key, "status", "reason", *estimate.columns}
    out = []
    for column in rows.columns:
        if column in skip or not (pd.api.types.is_object_dtype(rows[column])
                                  or pd.api.types.is_string_dtype(rows[column])):
            continue
        if rows[column].map(lambda v: isinstance(v, str) or v is None).all():
            out.append(column)
        if len(out) == CONTEXT_COLUMNS:
            break
    return out


def _row(rows: pd.DataFrame, i: int, key: str, a: float, b: float, context: list[str]
         ) -> dict[str, Any]:
    row: dict[str, Any] = {key: str(rows[key].iloc[i]), "a": float(a), "b": float(b),
                           "delta": float(b - a)}
    for column in context:
        value = rows[column].iloc[i]
        row[column] = None if value is None else str(value)[:80]
    return row


# ---- documents --------------------------------------------------------------------------------


def clean_json(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def settings_json(settings: BootstrapSettings, permutations: int, alpha: float
                  ) -> dict[str, Any]:
    return {"bootstrap": settings.resamples, "level": settings.level,
            "method": settings.method, "seed": settings.seed, "permutations": permutations,
            "alpha": alpha}


def comparison_document(pairs: list[PairComparison], settings: BootstrapSettings,
                        permutations: int, alpha: float,
                        gates: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything, as comparison.json."""
    document: dict[str, Any] = {
        "baseline": pairs[0].baseline if pairs else None,
        "candidates": [pair.candidate for pair in pairs],
        "settings": settings_json(settings, permutations, alpha),
        "comparisons": [pair.to_json() for pair in pairs],
    }
    if gates is not None:
        document["gates"] = gates
    return clean_json(document)


def _num(value: float | None, digits: int = 4, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def format_p(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def metric_cells(result: MetricComparison, alpha: float) -> list[str]:
    """metric, A, B, delta [CI], p (test), p_holm, effect, verdict."""
    interval = f"[{_num(result.ci_low, sign=True)}, {_num(result.ci_high, sign=True)}]"
    return [result.metric, _num(result.a), _num(result.b),
            f"{_num(result.delta, sign=True)} {interval}",
            f"{format_p(result.pvalue)} ({result.test})", format_p(result.p_holm),
            _num(result.effect_size, 2, sign=True), verdict(result, alpha)]


HEADERS = ["metric", "A", "B", "delta [CI]", "p (test)", "p_holm", "effect", "verdict"]


def _pair_heading(pair: PairComparison, settings: dict[str, Any]) -> list[str]:
    a, b = pair.baseline, pair.candidate
    level = round(100 * settings["level"], 1)
    return [f"A (baseline): {a['run_name']} ({a['run_id']})",
            f"B (candidate): {b['run_name']} ({b['run_id']})",
            f"rows compared: {pair.rows['compared']} ({pair.row_key}); delta = B - A with a "
            f"{level:g}% paired bootstrap CI ({settings['bootstrap']} resamples, "
            f"{settings['method']}, seed {settings['seed']}); p two-sided, Holm-adjusted over "
            f"{len(pair.metrics)} metrics; ↑/↓ = p_holm < {pair.alpha:g}"]


def _changed_lines(pair: PairComparison) -> list[str]:
    changed = pair.changed
    if not changed or changed.get("kind") == "none":
        return []
    flips = changed["kind"] == "flips"
    what = "flipped" if flips else "changed most"
    lines = [f"rows that {what} on {changed['metric']}: {changed['gained_total']} better, "
             f"{changed['lost_total']} worse in B"]
    for name in ("gained", "lost"):
        if changed[name]:
            ids = ", ".join(str(row[pair.row_key]) if flips else
                            f"{row[pair.row_key]} ({_num(row['delta'], 3, sign=True)})"
                            for row in changed[name])
            more = changed[f"{name}_total"] - len(changed[name])
            lines.append(f"  {'better' if name == 'gained' else 'worse'}: {ids}"
                         + (f" (+{more} more)" if more > 0 else ""))
    return lines


def render_text(document: dict[str, Any], pairs: list[PairComparison]) -> str:
    """Plain-text tables for stdout."""
    out: list[str] = []
    for pair in pairs:
        rows = [HEADERS] + [metric_cells(m, pair.alpha) for m in pair.metrics]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
        out += _pair_heading(pair, document["settings"])
        out += [f"note: {note}" for note in pair.notes]
        out.append("")
        out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                for row in rows]
        if pair.not_compared:
            out.append("")
            out += [f"not compared: {k} ({v})" for k, v in pair.not_compared.items()]
        changed = _changed_lines(pair)
        if changed:
            out.append("")
            out += changed
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_markdown(document: dict[str, Any], pairs: list[PairComparison]) -> str:
    """comparison.md: one table per compared run."""
    out = ["# Paired comparison", ""]
    for pair in pairs:
        a, b = pair.baseline, pair.candidate
        out += [f"## {b['run_name']} vs {a['run_name']}", ""]
        out += [f"- {line}" for line in _pair_heading(pair, document["settings"])]
        out += [f"- **note:** {note}" for note in pair.notes]
        out += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in metric_cells(m, pair.alpha))
                + " |" for m in pair.metrics]
        if pair.not_compared:
            out += ["", "Not compared: " + "; ".join(f"`{k}` ({v})"
                                                     for k, v in pair.not_compared.items())]
        changed = _changed_lines(pair)
        if changed:
            out += ["", changed[0], ""] + [f"- {line.strip()}" for line in changed[1:]]
        out.append("")
    return "\n".join(out)


def table_rows(pairs: list[PairComparison]) -> list[dict[str, str]]:
    """Rows for a Prefect table artifact (strings: NaN never reaches JSON)."""
    rows = []
    for pair in pairs:
        for result in pair.metrics:
            cells = dict(zip(HEADERS, metric_cells(result, pair.alpha), strict=True))
            rows.append({"candidate": str(pair.candidate["run_name"])} | cells)
    return rows


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric key (``[/\\w.\\- ]``)."""
    return UNSAFE_KEY.sub("_", ".".join(parts))


def comparison_metrics(pairs: list[PairComparison]) -> list[tuple[str, float, int]]:
    """(key, value, step) for the comparison run: ``delta.<metric>``, ``ci_low.<metric>``,
    ``ci_high.<metric>``, ``p.<metric>``, ``p_holm.<metric>``; step = the candidate's position
    (0 for the first compared run)."""
    out: list[tuple[str, float, int]] = []
    for step, pair in enumerate(pairs):
        out.append(("rows_compared", float(pair.rows["compared"]), step))
        for result in pair.metrics:
            values = {"delta": result.delta, "ci_low": result.ci_low,
                      "ci_high": result.ci_high, "p": result.pvalue, "p_holm": result.p_holm}
            out += [(metric_key(name, result.metric), float(value), step)
                    for name, value in values.items() if math.isfinite(value)]
    return out


def log_metric_steps(uri: str, run_id: str, metrics: list[tuple[str, float, int]]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    entries = [Metric(key, value, now, step) for key, value, step in metrics]
    client = ml.client(uri)
    for start in range(0, len(entries), 1000):
        client.log_batch(run_id, metrics=entries[start : start + 1000])
