"""Suites: several models x several datasets evaluated as one unit (plain logic, no Prefect).

``SuiteConfig`` is the suite flow's parameter (and its Prefect UI form). ``expand_suite`` turns
it into one ``EvalConfig`` per model x dataset, ``check_suite`` adds ``tasks.plan``'s registry
checks; errors name the suite entry (``models[1].path: Field required``). ``build_leaderboard``
puts the evaluations side by side and marks the best model per dataset and metric.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.config import DatasetConfig, EvalConfig, ModelConfig
from tasks.config_io import ConfigError, flatten, parse_override, read_yaml_mapping

if TYPE_CHECKING:  # pandas is imported where a table is built
    import pandas as pd

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
CI_SUFFIXES = ("_ci_low", "_ci_high")
BASE_COLUMNS = ["model", "dataset", "status"]
TAIL_COLUMNS = ["run_name", "mlflow_run_id", "report", "error"]


class SuiteModel(ModelConfig):
    """One model of a suite: a name plus every ``model`` field of an evaluation."""

    name: str = Field(..., pattern=NAME_PATTERN, max_length=100,
                      description="Short name of the model in run names and the leaderboard "
                      "(letters, digits, _ . -).")


class SuiteDataset(DatasetConfig):
    """One dataset of a suite: a name plus every ``dataset`` field of an evaluation."""

    name: str = Field(..., pattern=NAME_PATTERN, max_length=100,
                      description="Short name of the dataset in run names and the leaderboard "
                      "(letters, digits, _ . -).")


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(..., min_length=1, max_length=250,
                      description="Suite name: the name of the MLflow run the evaluations are "
                      "nested under.")
    models: list[SuiteModel] = Field(
        ..., min_length=1, description="Models to evaluate: each a name plus the model "
        "settings of an evaluation (kind, path, batch_size, device, ...)."
    )
    datasets: list[SuiteDataset] = Field(
        ..., min_length=1, description="Datasets every model is evaluated on: each a name plus "
        "the dataset settings of an evaluation (source, path, split, limit, ...)."
    )
    shared: dict[str, Any] = Field(
        default_factory=dict, description="Every other evaluation setting, applied to each "
        "model x dataset evaluation: task, metrics, metric_options, inference, review, report, "
        "tracking, work_dir, seed, ... (the fields of a run config except model and dataset). "
        "tracking.run_name defaults to <model name>@<dataset name>."
    )
    fail_fast: bool = Field(
        False, description="Stop at the first failed evaluation (default: run all of them, "
        "then fail the suite when any failed)."
    )


# ---------------------------------------------------------------------------- config in


def _path(loc: tuple[Any, ...], text: str = "") -> str:
    """``("models", 1, "path")`` -> ``models[1].path``."""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _where(loc: tuple[Any, ...]) -> str:
    return _path(loc) or "suite"


def _problems(error: ValidationError, place: Any = _where) -> list[str]:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        got = "" if item["type"] == "missing" else f" (got {item.get('input')!r})"
        lines.append(f"{place(item['loc'])}: {message}{got}")
    return lines


def _invalid(problems: list[str]) -> ConfigError:
    lines = "\n".join(f"  {p}" for p in dict.fromkeys(problems))
    return ConfigError("invalid suite configuration:\n" + lines)


def _entry_index(node: list[Any], key: str, text: str) -> int:
    if re.fullmatch(r"\d+", key) and int(key) < len(node):
        return int(key)
    for index, entry in enumerate(node):
        if isinstance(entry, dict) and entry.get("name") == key:
            return index
    raise ConfigError(f"override {text!r}: no entry {key!r} (give an index or an entry's name)")


def apply_suite_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Like ``config_io.apply_overrides`` (``key.sub=value``, values parsed as YAML), where a
    list entry is addressed by index or by name: ``models.clip-long.batch_size=32``,
    ``datasets.0.limit=100``, ``shared.review.size=0``."""
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = data
        for key in keys[:-1]:
            if isinstance(node, list):
                child = node[_entry_index(node, key, text)]
            else:
                child = node.setdefault(key, {})
            if not isinstance(child, dict | list):
                raise ConfigError(f"override {text!r}: {key!r} is not a section")
            node = child
        if isinstance(node, list):
            node[_entry_index(node, keys[-1], text)] = value
        else:
            node[keys[-1]] = value
    return data


def build_suite(data: dict[str, Any], overrides: list[str] | None = None) -> SuiteConfig:
    data = apply_suite_overrides(copy.deepcopy(data), overrides or [])
    try:
        return SuiteConfig.model_validate(data)
    except ValidationError as error:
        raise _invalid(_problems(error)) from None


def load_suite(path: str | Path, overrides: list[str] | None = None) -> SuiteConfig:
    """Read a suite YAML file and apply ``key.sub=value`` overrides."""
    return build_suite(read_yaml_mapping(path, "suite"), overrides)


def _structure_problems(suite: SuiteConfig) -> list[str]:
    problems = []
    names = {"models": [m.name for m in suite.models],
             "datasets": [d.name for d in suite.datasets]}
    for field, entries in names.items():
        first: dict[str, int] = {}
        for index, name in enumerate(entries):
            if name in first:
                problems.append(f"{field}[{index}].name: duplicate name {name!r} "
                                f"(also {field}[{first[name]}])")
            first.setdefault(name, index)
    for key, field in (("model", "models"), ("dataset", "datasets")):
        if key in suite.shared:
            problems.append(f"shared.{key}: not shared; give each entry of {field} its own "
                            f"{key} settings")
    tracking = suite.shared.get("tracking")
    if isinstance(tracking, dict) and tracking.get("parent_run_id"):
        problems.append("shared.tracking.parent_run_id: set by the suite flow, not in a suite")
    return problems


def label_of(model: str, dataset: str) -> str:
    return f"{model}@{dataset}"


def split_label(label: str) -> tuple[str, str]:
    """``"model@dataset"`` -> (model, dataset); names cannot contain ``@``."""
    model, _, dataset = label.partition("@")
    return model, dataset


def _eval_data(suite: SuiteConfig, model: SuiteModel, dataset: SuiteDataset) -> dict[str, Any]:
    data = copy.deepcopy(suite.shared)
    data["model"] = model.model_dump(mode="json", exclude={"name"})
    data["dataset"] = dataset.model_dump(mode="json", exclude={"name"})
    tracking = data.get("tracking")
    if tracking is None:
        tracking = {}
    if isinstance(tracking, dict):  # anything else is reported by the schema
        tracking = dict(tracking)
        if not tracking.get("run_name"):
            tracking["run_name"] = label_of(model.name, dataset.name)
    data["tracking"] = tracking
    return data


def expand_suite(suite: SuiteConfig) -> list[tuple[str, EvalConfig]]:
    """One ``("<model>@<dataset>", EvalConfig)`` per model x dataset, models first; raises
    ``ConfigError`` naming every problem by its suite entry."""
    problems = _structure_problems(suite)
    if problems:
        raise _invalid(problems)
    pairs = []
    for m, model in enumerate(suite.models):
        for d, dataset in enumerate(suite.datasets):
            try:
                config = EvalConfig.model_validate(_eval_data(suite, model, dataset))
            except ValidationError as error:
                problems += _problems(error, lambda loc, m=m, d=d: _entry_loc(loc, m, d))
                continue
            pairs.append((label_of(model.name, dataset.name), config))
    if problems:
        raise _invalid(problems)
    return pairs


def _entry_loc(loc: tuple[Any, ...], m: int, d: int) -> str:
    """An evaluation's field -> where it comes from in the suite."""
    head = {"model": f"models[{m}]", "dataset": f"datasets[{d}]"}.get(str(loc[0]) if loc else "")
    return _path(loc[1:], head) if head else _path(loc, "shared")


def _entry_line(line: str, m: int, d: int) -> str:
    """``model.kind: ...`` -> ``models[1].kind: ...``; other fields come from ``shared``."""
    match = re.match(r"(model|dataset)(?=[.:\s])", line)
    if not match:
        return f"shared.{line}"
    head = f"models[{m}]" if match.group(1) == "model" else f"datasets[{d}]"
    return head + line[match.end():]


def check_suite(suite: SuiteConfig) -> list[tuple[str, EvalConfig]]:
    """``expand_suite`` plus ``tasks.plan.check_config`` on every evaluation; all problems are
    reported together, before anything runs."""
    from tasks.plan import check_config

    pairs = expand_suite(suite)
    models = {entry.name: index for index, entry in enumerate(suite.models)}
    datasets = {entry.name: index for index, entry in enumerate(suite.datasets)}
    problems: list[str] = []
    for label, config in pairs:
        model, dataset = split_label(label)
        try:
            check_config(config)
        except ConfigError as error:
            lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
            problems += [_entry_line(line, models[model], datasets[dataset]) for line in lines]
    if problems:
        raise _invalid(problems)
    return pairs


def suite_params(suite: SuiteConfig, pairs: list[tuple[str, EvalConfig]]) -> dict[str, str]:
    """Params of the suite's MLflow run: entries, and the settings every evaluation shares."""
    params = {"suite.name": suite.name, "suite.fail_fast": str(suite.fail_fast).lower(),
              "suite.models": ", ".join(m.name for m in suite.models),
              "suite.datasets": ", ".join(d.name for d in suite.datasets),
              "suite.evaluations": str(len(pairs))}
    params |= {f"models.{m.name}.path": m.path for m in suite.models}
    params |= {f"datasets.{d.name}.path": d.path for d in suite.datasets}
    if pairs:
        skip = ("model.", "dataset.", "tracking.run_name", "tracking.parent_run_id")
        params |= {f"shared.{key}": value for key, value in flatten(pairs[0][1]).items()
                   if not key.startswith(skip)}
    return params


# ---------------------------------------------------------------------------- leaderboard


@dataclass
class Outcome:
    """One evaluation of a suite: ``result`` as returned by the evaluate flow when it ran."""

    label: str
    status: Literal["ok", "failed", "skipped"]
    result: dict[str, Any] | None = None
    error: str | None = None
    mlflow_run_id: str | None = None  # of a failed evaluation's run, when one was started


def is_ci_key(key: str) -> bool:
    """Bootstrap interval bounds (``<metric>_ci_low`` / ``_ci_high``) are not metrics."""
    return key.endswith(CI_SUFFIXES)


def default_higher_is_better(metric: str) -> bool:
    return not metric.endswith("_rank")


def metric_directions(results: list[dict[str, Any] | None]) -> dict[str, bool]:
    """``higher_is_better`` from each result's local ``report.json`` (S3 reports are skipped;
    metrics found nowhere fall back to ``default_higher_is_better``)."""
    directions: dict[str, bool] = {}
    for result in results:
        report = (result or {}).get("report")
        if not isinstance(report, str) or "://" in report:
            continue
        try:
            document = json.loads((Path(report) / "report.json").read_text())
        except (OSError, ValueError):
            continue
        found = document.get("higher_is_better") if isinstance(document, dict) else None
        if isinstance(found, dict):
            directions |= {str(key): bool(value) for key, value in found.items()}
    return directions


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def build_leaderboard(outcomes: list[Outcome],
                      higher_is_better: dict[str, bool] | None = None) -> pd.DataFrame:
    """One row per evaluation (model, dataset, status, run id, error) and per metric a value
    column, ``<metric>_ci_low`` / ``_ci_high`` where any result has them, and a boolean
    ``<metric>_best``: the best value among the models evaluated on the same dataset (ties
    all marked; nothing is marked where fewer than two models have a value)."""
    import pandas as pd

    results = [(o, (o.result or {}) if o.status == "ok" else {}) for o in outcomes]
    metrics: dict[str, bool] = {}  # metric -> has a CI
    for _, result in results:
        for key in result.get("metrics") or {}:
            if not is_ci_key(key):
                metrics.setdefault(key, False)
    for _, result in results:
        for key in result.get("metrics") or {}:
            for suffix in CI_SUFFIXES:
                if key.endswith(suffix) and key.removesuffix(suffix) in metrics:
                    metrics[key.removesuffix(suffix)] = True
    columns = list(BASE_COLUMNS)
    for metric, has_ci in metrics.items():
        columns += [metric, *([f"{metric}{s}" for s in CI_SUFFIXES] if has_ci else []),
                    f"{metric}_best"]
    columns += TAIL_COLUMNS
    rows = []
    for outcome, result in results:
        model, dataset = split_label(outcome.label)
        values = result.get("metrics") or {}
        row: dict[str, Any] = {
            "model": model, "dataset": dataset, "status": outcome.status,
            "run_name": result.get("run_name") or outcome.label,
            "mlflow_run_id": result.get("mlflow_run_id") or outcome.mlflow_run_id or "",
            "report": str(result.get("report") or ""), "error": outcome.error or ""}
        for metric, has_ci in metrics.items():
            row[metric] = _number(values.get(metric))
            for suffix in CI_SUFFIXES if has_ci else ():
                row[metric + suffix] = _number(values.get(metric + suffix))
            row[f"{metric}_best"] = False
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    directions = {m: (higher_is_better or {}).get(m, default_higher_is_better(m)) for m in metrics}
    for metric in metrics:
        frame[metric] = frame[metric].astype(float)
        frame[f"{metric}_best"] = frame[f"{metric}_best"].astype(bool)
        scored = frame[frame["status"].eq("ok") & frame[metric].notna()]
        for _, group in scored.groupby("dataset", sort=False):
            if len(group) < 2:
                continue
            best = group[metric].max() if directions[metric] else group[metric].min()
            frame.loc[group.index[group[metric] == best], f"{metric}_best"] = True
    frame.attrs["higher_is_better"] = directions
    return frame


def leaderboard_metrics(frame: pd.DataFrame) -> list[str]:
    return [c.removesuffix("_best") for c in frame.columns
            if c.endswith("_best") and c.removesuffix("_best") in frame.columns]


def leaderboard_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The table as JSON-ready rows (missing values as None)."""
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{str(k): v for k, v in record.items()} for record in records]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def metric_cell(row: dict[str, Any], metric: str, markdown: bool = False) -> str:
    """``0.258 [0.230, 0.290]*``: the value, its bootstrap interval when present, and the best
    value per dataset marked (markdown: the value in bold)."""
    value = row.get(metric)
    if _missing(value):
        return "-"
    best = bool(row.get(f"{metric}_best"))
    text = f"**{value:.3f}**" if best and markdown else f"{value:.3f}"
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if not _missing(low) and not _missing(high):
        text += f" [{low:.3f}, {high:.3f}]"
    return text + "*" if best and not markdown else text


def display_rows(frame: pd.DataFrame, markdown: bool = False) -> list[dict[str, str]]:
    """Text cells: model, dataset, status, one per metric, the MLflow run."""
    metrics = leaderboard_metrics(frame)
    rows = []
    for row in leaderboard_records(frame):
        cells = {"model": str(row["model"]), "dataset": str(row["dataset"]),
                 "status": str(row["status"])}
        cells |= {metric: metric_cell(row, metric, markdown) for metric in metrics}
        cells["MLflow run"] = str(row.get("mlflow_run_id") or "-")
        rows.append(cells)
    return rows


def _legend(frame: pd.DataFrame) -> str:
    directions = frame.attrs.get("higher_is_better") or {}
    lower = [m for m in leaderboard_metrics(frame)
             if not directions.get(m, default_higher_is_better(m))]
    text = "best per dataset (higher is better"
    return text + (f"; lower for {', '.join(lower)})" if lower else ")")


def leaderboard_lines(frame: pd.DataFrame) -> list[str]:
    """An aligned text table, ``*`` marking the best value per dataset and metric."""
    rows = display_rows(frame)
    if not rows:
        return ["(no evaluations)"]
    header = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in header]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(r[h].ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
              for r in rows]
    if leaderboard_metrics(frame):
        intervals = any(c.endswith("_ci_low") for c in frame.columns)
        lines += ["", "* " + _legend(frame)
                  + ("; [low, high]: bootstrap confidence interval" if intervals else "")]
    return lines


def leaderboard_markdown(frame: pd.DataFrame, title: str, link: str = "") -> str:
    """The leaderboard as markdown (best values in bold), with failures listed below."""
    rows = display_rows(frame, markdown=True)
    lines = [f"# Suite · {title}", ""]
    if link:
        lines += [f"MLflow run: {link}", ""]
    if rows:
        header = list(rows[0])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r[h].replace("|", "\\|") for h in header) + " |"
                  for r in rows]
        lines += ["", "**bold**: " + _legend(frame)]
    for record in leaderboard_records(frame):
        if record["status"] != "ok":
            lines.append(f"> **{record['status']}** {record['model']}@{record['dataset']}: "
                         f"{record['error']}")
    return "\n".join(lines)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What ``bifocal suite`` prints: the leaderboard, failures, the suite's MLflow run."""
    import pandas as pd

    frame = pd.DataFrame(result["leaderboard"])
    frame.attrs["higher_is_better"] = result.get("higher_is_better") or {}
    lines = [f"Suite {result['name']}: {len(frame)} evaluations", "", *leaderboard_lines(frame)]
    for failure in result.get("failures", []):
        lines.append(f"failed: {failure['label']}: {failure['error']}")
    for label in result.get("skipped", []):
        lines.append(f"skipped: {label} (fail_fast)")
    lines += ["", f"MLflow run: {result['mlflow_run_id']} ({result['tracking_uri']})"]
    return lines
