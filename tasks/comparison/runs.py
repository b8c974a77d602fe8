"""Runs to compare: selectors (run id, experiment:NAME, models:/NAME@ALIAS) and loading a
run's report.json and per-sample table from MLflow."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.comparison.constants import (
    DATASET_TAG,
    EXPERIMENT_PREFIX,
    KIND_TAG,
    MODELS_PREFIX,
    PER_SAMPLE,
    REPORT_JSON,
    SEARCH_LIMIT,
)
from tasks.stats.estimates import Estimate
from tasks.tracking import mlflow_log as ml


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
