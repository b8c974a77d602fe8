"""MLflow params only for the sections that apply to the run; the whole config (redacted) as
the run's config.yaml; Bifocal's experiments open on their runs in MLflow's UI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tasks.config_io import APPLIES, build_config, flatten, run_params
from tasks.secrets import redact
from tasks.tracking import mlflow_log as ml
from tasks.tracking import ui
from tasks.tracking.run import tracked_run

PLANTED = "pl4nted-s3cret"
TASK_SECTIONS = ("zero_shot.", "matching.", "vqa.")


def config_for(tmp_path: Path, **extra):
    data = {"model": {"path": str(tmp_path / "m")}, "dataset": {"path": str(tmp_path / "d")},
            "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                         "experiment": "params"},
            "work_dir": str(tmp_path / "work")}
    return build_config(data | extra)


def sections(params: dict[str, str]) -> set[str]:
    return {key.split(".")[0] for key in params}


def test_retrieval_logs_no_other_tasks_or_generation_params(tmp_path):
    params = run_params(config_for(tmp_path))
    assert not [k for k in params if k.startswith((*TASK_SECTIONS, "model.generation."))]
    assert not [k for k in params if k.startswith(("model.torch_module", "gate", "promote",
                                                   "slices.", "tracking.parent_run_id"))]
    assert params["model.kind"] == "dual_encoder" and params["review.size"] == "20"
    assert params["statistics.bootstrap"] == "1000" and params["task"] == "retrieval"
    assert set(params) < set(flatten(config_for(tmp_path)))


def test_captioning_logs_generation(tmp_path):
    params = run_params(config_for(tmp_path, task="captioning",
                                   model={"kind": "captioner", "path": "m"}))
    assert params["model.generation.max_new_tokens"] == "null"  # the checkpoint's
    assert params["model.generation.question_template"] == "null"
    assert not [k for k in params if k.startswith(TASK_SECTIONS)]


@pytest.mark.parametrize(("task", "model", "kept"), [
    ("vqa", {"kind": "vqa", "path": "m"}, ("vqa.", "model.generation.")),
    ("zero_shot_classification", {"path": "m"}, ("zero_shot.",)),
    ("matching", {"kind": "torch_module", "path": "w.pt",
                  "torch_module": {"module": "pkg.mod:Net"}},
     ("matching.", "model.torch_module.")),
])
def test_each_task_keeps_its_own_sections(tmp_path, task, model, kept):
    params = run_params(config_for(tmp_path, task=task, model=model))
    for prefix in kept:
        assert [k for k in params if k.startswith(prefix)], prefix
    others = [p for p in (*TASK_SECTIONS, "model.generation.", "model.torch_module.")
              if p not in kept]
    assert not [k for k in params if k.startswith(tuple(others))]


def test_optional_sections_are_logged_when_set(tmp_path):
    config = config_for(tmp_path, gate={"baseline": "experiment:params"},
                        promote={"model_name": "clip"}, slices={"columns": ["size"]})
    params = run_params(config)
    assert params["gate.baseline"] == "experiment:params"
    assert params["promote.alias"] == "champion" and params["slices.columns"] == "[size]"


def test_robustness_params_only_for_the_variants_asked_for(tmp_path):
    assert not [k for k in run_params(config_for(tmp_path))
                if k.startswith(("robustness.corruptions", "robustness.severities",
                                 "robustness.text", "robustness.adversarial"))]
    params = run_params(config_for(tmp_path, robustness={"corruptions": ["fog"],
                                                         "adversarial": {"epsilons": [0.5]}}))
    assert params["robustness.corruptions"] == "[fog]"
    assert params["robustness.severities"] == "[1, 3, 5]"
    assert params["robustness.adversarial.epsilons"] == "[0.5]"
    assert "robustness.text" not in params


def test_every_rule_names_a_section_of_the_config(tmp_path):
    flat = flatten(config_for(tmp_path, gate={"baseline": "r"}, promote={"model_name": "m"},
                              tracking={"parent_run_id": "p"},
                              robustness={"corruptions": ["jpeg"], "adversarial": {},
                                          "text": [{"name": "lowercase"}]},
                              model={"kind": "torch_module", "path": "w.pt",
                                     "torch_module": {"module": "a:B"}}))
    for section in APPLIES:
        assert any(k == section or k.startswith(f"{section}.") for k in flat), section



def test_tracked_run_logs_applying_params_and_the_whole_config(tmp_path, clean_env):
    config = config_for(tmp_path, metric_options={"clip_score": {"api_token": PLANTED}})
    uri = str(config.tracking.tracking_uri)
    with tracked_run(uri, config, "r", {"bifocal.task": "retrieval"}) as run_id:
        pass
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.params == run_params(config)
    assert "model.generation.max_new_tokens" not in run.data.params
    local = client.download_artifacts(run_id, "config.yaml", str(tmp_path / "down"))
    text = Path(local).read_text()
    stored = yaml.safe_load(text)
    assert stored == redact(config.model_dump(mode="json"))
    assert stored["model"]["generation"]["max_new_tokens"] is None
    assert PLANTED not in text and PLANTED not in json.dumps(run.data.params)
    assert stored["metric_options"]["clip_score"]["api_token"].startswith("${env:")


def test_a_created_experiment_is_a_model_training_one(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = ml.start_run(uri, "fresh", "r", {})
    client = MlflowClient(uri)
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    client.create_experiment("theirs")  # one Bifocal did not create keeps its tags
    assert ml.ensure_experiment(client, "theirs", uri)
    assert "mlflow.experimentKind" not in client.get_experiment_by_name("theirs").tags


def test_task_view_is_a_saved_view_of_the_task_metrics(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = ml.ensure_experiment(client, "views", uri)
    metrics = {"i2t_recall_at_5": 0.5, "i2t_recall_at_1": 0.25, "i2t_recall_at_1_ci_low": 0.2,
               "i2t_recall_at_1_ci_high": 0.3}
    view = ui.set_task_view(client, experiment_id, "retrieval", "i2t_recall_at_1", metrics)
    assert view == "bifocal-retrieval"
    envelope = json.loads(client.get_experiment(experiment_id).tags[
        "mlflow.sharedViewState.bifocal-retrieval"])
    assert envelope["name"] == "Bifocal: retrieval" and envelope["createdAt"] > 0
    state = json.loads(envelope["state"])
    assert state["searchFilter"] == "tags.`bifocal.task` = 'retrieval'"
    assert state["selectedColumns"][3:] == ["metrics.`i2t_recall_at_1`",
                                            "metrics.`i2t_recall_at_5`"]
    assert ui.set_task_view(client, experiment_id, "vqa", "vqa_accuracy", {}) is None
    url = ui.runs_url("http://h:5000/", experiment_id, view)
    assert url == (f"http://h:5000/#/experiments/{experiment_id}/runs?"
                   "workflowType=machine_learning&viewStateShareKey=bifocal-retrieval")
