"""The generalisation-gap flow: evaluate the model on the configured split and on another split
of the same dataset, then every metric's gap (other - evaluated) with an unpaired bootstrap
interval, logged onto the evaluated split's MLflow run."""

from __future__ import annotations

import json
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.evaluate import evaluate
from tasks.comparison.gap import gap_lines, gap_metrics, split_gap
from tasks.comparison.runs import load_run
from tasks.config import EvalConfig
from tasks.config_io import ConfigError
from tasks.stats import BootstrapSettings
from tasks.tracking import mlflow_log as ml
from tasks.tracking.run import default_run_name

GAP_JSON = "generalisation_gap.json"


def other_split_config(config: EvalConfig, split: str) -> EvalConfig:
    """The same evaluation on ``split`` (run name ``<name> [split]``); refused when the
    config names no split or the same one."""
    if config.dataset.split is None:
        raise ConfigError("--compare-split needs dataset.split (the evaluated split, e.g. "
                          "test): without it every row of the dataset is evaluated")
    if config.dataset.split == split:
        raise ConfigError(f"--compare-split {split!r} is the evaluated split itself")
    dataset = config.dataset.model_copy(update={"split": split})
    tracking = config.tracking.model_copy(
        update={"run_name": f"{default_run_name(config)} [{split}]"})
    return config.model_copy(update={"dataset": dataset, "tracking": tracking})


def log_gap(uri: str, run_id: str, document: dict[str, Any]) -> None:
    """The gap metrics, tags linking the other split's run, and the JSON document."""
    ml.log_metrics(uri, run_id, gap_metrics(document))
    ml.set_tags(uri, run_id, {"bifocal.gap_split": document["split"],
                              "bifocal.gap_run": document["other_run"]["run_id"]})
    with TemporaryDirectory(prefix="bifocal-gap-") as folder:
        path = Path(folder) / GAP_JSON
        path.write_text(json.dumps(document, indent=1, default=str))
        ml.log_artifacts(uri, run_id, Path(folder), "gap")


@flow(name="generalisation-gap", log_prints=True)
def generalisation_gap(config: EvalConfig, split: str = "train") -> dict[str, Any]:
    """Evaluate on ``config.dataset.split`` and on ``split``; the gap of every metric."""
    other_config = other_split_config(config, split)
    evaluated = evaluate(config)
    other = evaluate(other_config)
    uri = ml.tracking_uri(config.tracking.tracking_uri)
    stats = config.statistics
    settings = BootstrapSettings(stats.bootstrap, stats.level, "percentile", stats.seed)
    document = split_gap(load_run(uri, evaluated["mlflow_run_id"]),
                         load_run(uri, other["mlflow_run_id"]), split, settings)
    log_gap(uri, evaluated["mlflow_run_id"], document)
    text = "\n".join(gap_lines(document))
    get_run_logger().info("generalisation gap (%s - %s):\n%s", split, config.dataset.split,
                          text)
    create_markdown_artifact(f"## Generalisation gap ({split} - {config.dataset.split})\n\n"
                             f"```\n{text}\n```\n", key="bifocal-generalisation-gap",
                             description="Metric gap between two splits")
    return {"evaluated": evaluated, "other": other, "gap": document, "text": text}
