"""What MLflow's UI shows of Bifocal's experiments (MLflow 3.17's web UI).

**Experiment kind.** Experiments Bifocal creates carry the tag ``mlflow.experimentKind`` =
``custom_model_development`` ("Machine learning"), the tag MLflow's UI writes when someone
picks an experiment's type. MLflow 3.17's UI no longer reads it to choose the page an
experiment opens on: that follows the sidebar switch "GenAI | Model training" (kept in the
browser's local storage; GenAI, hence the traces overview, by default) unless the address says
``?workflowType=machine_learning``, as ``runs_url``'s addresses do.

**A runs view per task.** MLflow has no setting for the runs table's default columns (it shows
none of the metrics until they are picked under "Columns"); it does keep saved views as
experiment tags ``mlflow.sharedViewState.<id>`` (the "Views" menu above the runs table, or
``?viewStateShareKey=<id>``). ``set_task_view`` saves one per task kind, ``bifocal-<task>``:
the runs of that task (``tags.bifocal.task``) with its metrics as columns, so its charts
compare like with like.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_PARAMETER = "viewStateShareKey"
WORKFLOW = "workflowType=machine_learning"
# the runs table's own default columns (MLflow 3.17), kept in front of the metrics
DEFAULT_COLUMNS = ("attributes.`Source`", "attributes.`Models`", "attributes.`Dataset`")
VIEW_METRICS = 10  # metric columns in a task's view, the headline first
INTERVAL_SUFFIXES = ("_ci_low", "_ci_high")


def experiment_tags() -> dict[str, str]:
    """Tags of an experiment Bifocal creates."""
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING}


def view_id(task: str) -> str:
    return f"bifocal-{task}"


def view_name(task: str) -> str:
    return f"Bifocal: {task}"


def view_metrics(headline: str, metrics: Iterable[str]) -> list[str]:
    """The headline metric, then the others in their order, without interval bounds."""
    keys = [k for k in metrics if not k.endswith(INTERVAL_SUFFIXES)]
    ordered = [headline] * (headline in keys) + [k for k in keys if k != headline]
    return ordered[:VIEW_METRICS]


def view_state(task: str, metrics: list[str]) -> dict[str, Any]:
    """The runs table's state the view restores: the task's runs, its metrics as columns."""
    return {"searchFilter": f"tags.`bifocal.task` = '{task}'",
            "selectedColumns": [*DEFAULT_COLUMNS, *(f"metrics.`{m}`" for m in metrics)]}


def view_tag(task: str, metrics: list[str], now_ms: int | None = None) -> tuple[str, str]:
    """The experiment tag (key, value) of the task's saved view, as MLflow's UI writes it."""
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    envelope = {"name": view_name(task), "createdAt": stamp, "updatedAt": stamp,
                "state": json.dumps(view_state(task, metrics))}
    return f"{VIEW_TAG_PREFIX}{view_id(task)}", json.dumps(envelope)


def set_task_view(mlflow_client: Any, experiment_id: str, task: str, headline: str,
                  metrics: Iterable[str]) -> str | None:
    """Save (or refresh) the task's runs view on the experiment; its id, or None when the run
    has no metrics to show."""
    shown = view_metrics(headline, metrics)
    if not shown:
        return None
    key, value = view_tag(task, shown)
    mlflow_client.set_experiment_tag(experiment_id, key, value)
    return view_id(task)


def runs_url(ui: str, experiment_id: str, view: str | None = None) -> str:
    """The experiment's runs table in MLflow's UI (in the machine-learning workflow), through
    the task's view when given."""
    query = WORKFLOW + (f"&{VIEW_PARAMETER}={view}" if view else "")
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
