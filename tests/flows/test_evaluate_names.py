"""What a person sees of an evaluation in Prefect: the flow run is named after the evaluation,
its log says the MLflow run, the report and the metrics; the MLflow run points at the Prefect
flow run only when that server outlives the command."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tasks.config_io import build_config
from tasks.tracking.run import default_run_name, flow_run_ids, prefect_server_outlives, start_tags
from tests.helpers import write_dataset


def make_config(tmp_path: Path, model_dir: Path, **extra: Any):
    manifest = write_dataset(tmp_path / "ds", n=8)
    data = {"model": {"path": str(model_dir), "batch_size": 4}, "dataset": {"path": str(manifest)},
            "review": {"size": 2}, "statistics": {"bootstrap": 50},
            "report": {"destination": str(tmp_path / "reports")},
            "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                         "experiment": "names"},
            "work_dir": str(tmp_path / "work")}
    return build_config(data | extra)


@pytest.fixture
def runtime(monkeypatch):
    """Stand-ins for prefect.runtime.flow_run's fields (id, name, ui_url, parameters)."""
    from prefect.runtime import flow_run

    def use(**fields: Any) -> None:
        for name, value in fields.items():
            monkeypatch.setitem(flow_run.FIELDS, name, lambda value=value: value)

    return use


def api_url(value: str | None):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: value})


def test_flow_run_name_is_the_evaluations(tmp_path, runtime):
    from flows.evaluate import evaluation_name

    config = make_config(tmp_path, tmp_path / "clip-tiny")
    runtime(parameters={"config": config})
    assert evaluation_name() == default_run_name(config) == "clip-tiny@data"
    named = config.model_copy(update={"tracking": config.tracking.model_copy(
        update={"run_name": "nightly-clip"})})
    runtime(parameters={"config": named.model_dump(mode="json")})  # as a deployment passes it
    assert evaluation_name() == "nightly-clip"
    runtime(parameters={"config": {"model": {}}})
    assert evaluation_name() == "evaluate"  # the flow itself says what is wrong


def test_prefect_ids_only_for_a_server_that_outlives_the_command(tmp_path, runtime):
    flow_run_id = str(uuid.uuid4())
    runtime(id=flow_run_id, name="clip-tiny@test",
            ui_url=f"http://127.0.0.1:4200/flow-runs/flow-run/{flow_run_id}")
    config = make_config(tmp_path, tmp_path / "clip-tiny")
    with api_url("http://127.0.0.1:4200/api"):
        assert prefect_server_outlives()
        tags = start_tags(config, "v1", flow_run_ids())
    assert tags["prefect.flow_run_id"] == flow_run_id
    assert tags["prefect.flow_run_name"] == "clip-tiny@test"
    assert tags["prefect.flow_run_url"].endswith(f"/flow-runs/flow-run/{flow_run_id}")
    with api_url(None):  # `bifocal run` without a server: Prefect's temporary one
        assert not prefect_server_outlives()
        assert not [k for k in start_tags(config, "v1", flow_run_ids()) if k.startswith("prefect.")]


def test_metrics_line_puts_the_headline_first_with_intervals():
    from flows.evaluate import metrics_line

    metrics = {"t2i_recall_at_1": 0.5, "i2t_recall_at_1": 0.25812, "i2t_recall_at_1_ci_low": 0.2,
               "i2t_recall_at_1_ci_high": 0.31}
    assert metrics_line("i2t_recall_at_1", metrics) == \
        "i2t_recall_at_1=0.2581 [0.2, 0.31], t2i_recall_at_1=0.5"
    assert metrics_line("cider", {}) == "none"


@pytest.mark.e2e
def test_flow_run_name_log_lines_and_mlflow_links(prefect_harness, tmp_path, tiny_clip_dir,
                                                  caplog):
    from prefect import get_client

    from flows.evaluate import evaluate

    config = make_config(tmp_path, tiny_clip_dir)
    caplog.set_level(logging.INFO, logger="prefect.flow_runs")
    result = evaluate(config)
    run_id = result["mlflow_run_id"]
    client = MlflowClient(tracking_uri=config.tracking.tracking_uri)
    run = client.get_run(run_id)
    tags = run.data.tags

    # the harness's server is a running one (PREFECT_API_URL set): the run points at it
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(uuid.UUID(tags["prefect.flow_run_id"]))
    assert flow_run.name == tags["prefect.flow_run_name"] == default_run_name(config)
    assert tags["prefect.flow_run_url"].endswith(f"/flow-runs/flow-run/{flow_run.id}")

    lines = [r.getMessage() for r in caplog.records if r.name == "prefect.flow_runs"]
    assert f"MLflow run {run_id}: mlflow ui --backend-store-uri" in "\n".join(lines)
    assert f"report: {result['report']}" in lines
    [metrics] = [line for line in lines if line.startswith("metrics: ")]
    assert metrics.startswith("metrics: i2t_recall_at_1=") and "t2i_recall_at_1=" in metrics
    assert any("Views > Bifocal: retrieval" in line for line in lines)

    assert not [k for k in run.data.params if k.startswith(("zero_shot.", "matching.", "vqa.",
                                                             "model.generation."))]
    assert "config.yaml" in {a.path for a in client.list_artifacts(run_id)}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags["mlflow.sharedViewState.bifocal-retrieval"])
    assert "metrics.`i2t_recall_at_1`" in json.loads(view["state"])["selectedColumns"]
