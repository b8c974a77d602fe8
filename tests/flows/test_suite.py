"""Suites: config expansion and errors, the leaderboard, and the suite flow end to end (nested
MLflow runs on a temporary SQLite store, one Prefect harness)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tasks.config_io import ConfigError
from tasks.suite import (
    Outcome,
    build_leaderboard,
    build_suite,
    check_suite,
    expand_suite,
    leaderboard_lines,
    load_suite,
    metric_directions,
)
from tests.helpers import write_dataset

ROOT = Path(__file__).resolve().parents[2]


def suite_data(tmp_path: Path, models: dict[str, str], datasets: dict[str, str],
               **extra) -> dict:
    return {
        "name": "nightly",
        "models": [{"name": n, "path": p, "batch_size": 4} for n, p in models.items()],
        "datasets": [{"name": n, "path": p} for n, p in datasets.items()],
        "shared": {"task": "retrieval", "review": {"size": 2},
                   "report": {"destination": str(tmp_path / "reports"), "formats": ["json"]},
                   "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                "experiment": "suite-exp"},
                   "work_dir": str(tmp_path / "work")},
        **extra,
    }


# ------------------------------------------------------------------ config (no Prefect)


def test_expansion_is_models_times_datasets_with_run_names(tmp_path: Path):
    data = suite_data(tmp_path, {"a": "/m/a", "b": "/m/b"}, {"x": "/d/x.jsonl", "y": "/d/y.jsonl"})
    data["datasets"][1]["limit"] = 3
    pairs = expand_suite(build_suite(data, ["models.b.batch_size=8", "shared.seed=7"]))
    assert [label for label, _ in pairs] == ["a@x", "a@y", "b@x", "b@y"]
    by_label = dict(pairs)
    assert by_label["b@y"].model.path == "/m/b" and by_label["b@y"].model.batch_size == 8
    assert by_label["a@y"].dataset.limit == 3 and by_label["a@x"].dataset.limit is None
    assert {c.tracking.run_name for _, c in pairs} == {"a@x", "a@y", "b@x", "b@y"}
    assert {c.seed for _, c in pairs} == {7} and {c.review.size for _, c in pairs} == {2}
    data["shared"]["tracking"]["run_name"] = "fixed"
    assert {c.tracking.run_name for _, c in expand_suite(build_suite(data))} == {"fixed"}


def test_validation_errors_name_the_suite_entry(tmp_path: Path):
    data = suite_data(tmp_path, {"a": "/m/a", "b": "/m/b"}, {"x": "/d/x.jsonl"})
    del data["models"][1]["path"]
    data["datasets"][0]["limit"] = 0
    with pytest.raises(ConfigError) as error:
        build_suite(data)
    assert "models[1].path: Field required" in str(error.value)
    assert "datasets[0].limit: Input should be greater than or equal to 1" in str(error.value)

    data = suite_data(tmp_path, {"a": "/m/a", "a2": "/m/b"}, {"x": "/d/x.jsonl"})
    data["models"][1]["name"] = "a"
    data["shared"]["review"] = {"size": -1}
    data["shared"]["model"] = {"batch_size": 2}
    with pytest.raises(ConfigError) as error:
        expand_suite(build_suite(data))
    assert "models[1].name: duplicate name 'a'" in str(error.value)
    assert "shared.model: not shared" in str(error.value)
    del data["shared"]["model"]
    data["models"][1]["name"] = "b"
    with pytest.raises(ConfigError) as error:
        expand_suite(build_suite(data))
    message = str(error.value)
    assert "shared.review.size: Input should be greater than or equal to 0" in message
    assert message.count("shared.review.size") == 1  # once, not once per evaluation

    data["shared"]["review"] = {"size": 1}
    data["models"][1]["kind"] = "no-such-kind"
    data["shared"]["metrics"] = ["no_such_metric"]
    with pytest.raises(ConfigError) as error:
        check_suite(build_suite(data))
    message = str(error.value)
    assert "models[1].kind: unknown model kind 'no-such-kind'" in message
    assert "shared.metrics: unknown metric 'no_such_metric'" in message


def test_the_suite_gate_applies_to_its_one_pair_and_names_real_entries(tmp_path: Path):
    gate = {"model": "b", "dataset": "x", "baseline": "models:/clip@champion",
            "rules": [{"metric": "i2t_recall_at_1", "max_drop": 0.01}]}
    data = suite_data(tmp_path, {"a": "/m/a", "b": "/m/b"}, {"x": "/d/x.jsonl", "y": "/d/y"},
                      gate=gate, promote={"model_name": "clip"})
    by_label = dict(expand_suite(build_suite(data)))
    assert [label for label, c in by_label.items() if c.gate is not None] == ["b@x"]
    assert by_label["b@x"].gate.baseline == "models:/clip@champion"
    assert by_label["b@x"].promote.alias == "champion" and by_label["a@x"].promote is None
    bad = suite_data(tmp_path, {"a": "/m/a"}, {"x": "/d/x.jsonl"},
                     gate=gate | {"model": "zz"}, promote={"model_name": "clip"})
    bad["shared"]["gate"] = {"baseline": "experiment:e"}
    with pytest.raises(ConfigError) as error:
        expand_suite(build_suite(bad))
    assert "gate.model: no models entry named 'zz'" in str(error.value)
    assert "shared.gate: the suite has its own gate/promote" in str(error.value)
    lonely = suite_data(tmp_path, {"a": "/m/a"}, {"x": "/d/x.jsonl"},
                        promote={"model_name": "clip"})
    with pytest.raises(ConfigError, match="promote: needs the suite's gate"):
        expand_suite(build_suite(lonely))


def test_load_suite_reads_yaml_and_overrides_by_index_or_name(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite_data(tmp_path, {"a": "/m/a"}, {"x": "/d/x.jsonl"})))
    suite = load_suite(path, ["models.0.batch_size=2", "datasets.x.limit=5", "fail_fast=true"])
    assert suite.models[0].batch_size == 2 and suite.datasets[0].limit == 5 and suite.fail_fast
    with pytest.raises(ConfigError, match="no entry 'zz'"):
        load_suite(path, ["models.zz.path=/m"])
    with pytest.raises(ConfigError, match="models\\[0\\].batch_size"):
        load_suite(path, ["models.a.batch_size=0"])


def test_example_demo_suite_is_a_valid_suite():
    suite = load_suite(ROOT / "deployments" / "configs" / "demo-suite.yaml")
    pairs = check_suite(suite)
    assert {m.name for m in suite.models} == {"clip-tiny-short", "clip-tiny-long"}
    assert len(pairs) == 2 * len(suite.datasets) and len(suite.datasets) >= 2


# ------------------------------------------------------------------ leaderboard (no Prefect)


def test_leaderboard_cis_directions_and_best_per_dataset(tmp_path: Path):
    def ok(label: str, metrics: dict) -> Outcome:
        return Outcome(label, "ok", result={"mlflow_run_id": f"id-{label}", "run_name": label,
                                            "metrics": metrics, "report": ""})

    outcomes = [
        ok("a@x", {"r1": 0.5, "r1_ci_low": 0.4, "r1_ci_high": 0.6, "t2i_mean_rank": 3.0,
                   "loss": 1.0}),
        ok("b@x", {"r1": 0.7, "r1_ci_low": 0.6, "r1_ci_high": 0.8, "t2i_mean_rank": 2.0,
                   "loss": 2.0}),
        ok("a@y", {"r1": 0.9, "t2i_mean_rank": 5.0, "loss": 1.0}),
        ok("b@y", {"r1": 0.1, "t2i_mean_rank": 5.0, "loss": 3.0}),
        Outcome("c@y", "failed", error="ModelError: broken"),
    ]
    report = tmp_path / "rep"
    report.mkdir()
    (report / "report.json").write_text(json.dumps({"higher_is_better": {"loss": False}}))
    outcomes[0].result["report"] = str(report)  # type: ignore[index]
    directions = metric_directions([o.result for o in outcomes])
    assert directions == {"loss": False}
    frame = build_leaderboard(outcomes, directions)

    assert "r1_ci_low" in frame.columns and "r1_ci_low_best" not in frame.columns
    best = {(r.model, r.dataset): (r.r1_best, r.t2i_mean_rank_best, r.loss_best)
            for r in frame.itertuples()}
    assert best[("b", "x")] == (True, True, False)  # rank: lower is better
    assert best[("a", "x")] == (False, False, True)  # loss: lower, from report.json
    assert best[("a", "y")] == (True, True, True)  # tied ranks are both best
    assert best[("b", "y")] == (False, True, False)
    assert best[("c", "y")] == (False, False, False)
    failed = frame[frame["model"] == "c"].iloc[0]
    assert failed["status"] == "failed" and "broken" in failed["error"]

    text = "\n".join(leaderboard_lines(frame))
    assert "0.700 [0.600, 0.800]*" in text and "0.500 [0.400, 0.600] " in text
    assert "0.900*" in text and "lower for t2i_mean_rank, loss" in text


# ------------------------------------------------------------------ flow end to end


@pytest.fixture(scope="module")
def second_clip_dir(tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP with differently seeded weights: another checkpoint to compare."""
    import torch
    from transformers import CLIPModel

    folder = tmp_path_factory.mktemp("tiny-clip-b")
    shutil.copytree(tiny_clip_dir, folder, dirs_exist_ok=True)
    model = CLIPModel.from_pretrained(tiny_clip_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def datasets(tmp_path: Path) -> dict[str, str]:
    return {"eight": str(write_dataset(tmp_path / "d8", n=8)),
            "twelve": str(write_dataset(tmp_path / "d12", n=12))}


def children(client: MlflowClient, parent_id: str) -> dict[str, object]:
    experiment = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([experiment],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return {run.info.run_name: run for run in runs}



@pytest.mark.e2e
def test_suite_runs_every_pair_nested_and_marks_the_best(prefect_harness, tmp_path, datasets,
                                                         tiny_clip_dir, second_clip_dir,
                                                         monkeypatch):
    import mlflow

    from flows.suite import suite

    config = build_suite(suite_data(tmp_path, {"seed0": str(tiny_clip_dir),
                                               "seed1": str(second_clip_dir)}, datasets))
    result = suite(config)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "nightly"
    assert parent.data.metrics["evaluations"] == 4 and parent.data.metrics["evaluations_ok"] == 4
    assert parent.data.params["models.seed1.path"] == str(second_clip_dir)
    runs = children(client, parent.info.run_id)
    assert set(runs) == {"seed0@eight", "seed0@twelve", "seed1@eight", "seed1@twelve"}
    assert all(run.info.status == "FINISHED" for run in runs.values())  # type: ignore[attr-defined]
    assert result["failures"] == [] and len(result["leaderboard"]) == 4

    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", uri)
    table = client.load_table(parent.info.experiment_id, "leaderboard.json",
                              run_ids=[parent.info.run_id])
    assert len(table) == 4 and {"model", "dataset", "status", "i2t_recall_at_1_best"} <= set(
        table.columns)
    # best marks against the child runs' own metrics in MLflow (ranks: lower is better)
    for row in result["leaderboard"]:
        run = runs[f"{row['model']}@{row['dataset']}"]
        assert row["mlflow_run_id"] == run.info.run_id  # type: ignore[attr-defined]
    marked = 0
    for metric in ("i2t_recall_at_1", "t2i_recall_at_1", "i2t_mean_rank", "t2i_mean_rank"):
        for dataset in datasets:
            values = {m: runs[f"{m}@{dataset}"].data.metrics[metric]  # type: ignore[attr-defined]
                      for m in ("seed0", "seed1")}
            best = (min if metric.endswith("_rank") else max)(values.values())
            for row in result["leaderboard"]:
                if row["dataset"] == dataset:
                    assert row[metric] == pytest.approx(values[row["model"]])
                    assert row[f"{metric}_best"] == (values[row["model"]] == best)
                    marked += row[f"{metric}_best"]
            logged = table[(table["dataset"] == dataset)].set_index("model")[f"{metric}_best"]
            assert {m: bool(v) for m, v in logged.items()} == {
                m: v == best for m, v in values.items()}
    assert marked >= 8
    assert len({r["i2t_mean_rank"] for r in result["leaderboard"]}) > 1  # the models differ


@pytest.mark.e2e
def test_broken_model_fails_the_suite_after_the_others_ran(prefect_harness, tmp_path, datasets,
                                                           tiny_clip_dir, capsys):
    from flows.cli import main

    data = suite_data(tmp_path, {"broken": str(tmp_path / "no-such-model"),
                                 "good": str(tiny_clip_dir)}, {"eight": datasets["eight"]})
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["suite", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "broken@eight" in err and "good" in out and "failed" in out
    parent_id = out.split("MLflow run: ")[-1].split()[0]

    client = MlflowClient(tracking_uri=data["shared"]["tracking"]["tracking_uri"])
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED"
    assert "broken@eight" in parent.data.tags["bifocal.error"]
    assert parent.data.metrics["evaluations_failed"] == 1
    runs = children(client, parent_id)
    assert runs["good@eight"].info.status == "FINISHED"  # type: ignore[attr-defined]
    assert runs["broken@eight"].info.status == "FAILED"  # type: ignore[attr-defined]


@pytest.mark.e2e
def test_fail_fast_stops_at_the_first_failure_and_the_flow_run_fails(prefect_harness, tmp_path,
                                                                      datasets, tiny_clip_dir):
    from flows.suite import SuiteFailed, suite

    config = build_suite(suite_data(tmp_path, {"broken": str(tmp_path / "no-such-model"),
                                               "good": str(tiny_clip_dir)},
                                    {"eight": datasets["eight"]}, fail_fast=True))
    state = suite(config, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, SuiteFailed) and "broken@eight" in str(error)
    assert error.result is not None and error.result["skipped"] == ["good@eight"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(error.result["mlflow_run_id"]).info.status == "FAILED"
    assert set(children(client, error.result["mlflow_run_id"])) == {"broken@eight"}
    with pytest.raises(SuiteFailed, match="broken@eight"):
        suite(config)
