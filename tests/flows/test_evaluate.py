"""End-to-end: the evaluate flow under one Prefect test harness, MLflow in a temporary folder."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tasks.config_io import build_config
from tests.helpers import write_dataset

pytestmark = pytest.mark.e2e


def make_config(tmp_path: Path, model_dir: Path, manifest: Path, **extra):
    data = {
        "model": {"path": str(model_dir), "batch_size": 4},
        "dataset": {"path": str(manifest)},
        "review": {"size": 4, "seed": 1},
        "report": {"destination": str(tmp_path / "reports")},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "experiment": "test-exp"},
        "work_dir": str(tmp_path / "work"),
    }
    return build_config(data | extra)


@pytest.fixture
def flow_setup(tmp_path: Path, tiny_clip_dir: Path):
    manifest = write_dataset(tmp_path / "ds", n=10)
    with manifest.open("a") as handle:  # one row that must show up as a reject
        handle.write(json.dumps({"id": "bad", "image": "../x.png", "captions": ["x"]}) + "\n")
    return make_config(tmp_path, tiny_clip_dir, manifest), tmp_path


def test_evaluate_flow_tracks_everything_and_reuses_inference(prefect_harness, flow_setup,
                                                              monkeypatch):
    import mlflow

    from flows.evaluate import evaluate

    config, tmp_path = flow_setup
    first = evaluate(config)
    client = MlflowClient(tracking_uri=config.tracking.tracking_uri)
    run = client.get_run(first["mlflow_run_id"])

    assert run.info.status == "FINISHED"
    assert run.data.params["model.path"] == config.model.path
    assert run.data.params["review.size"] == "4"
    for key in ("i2t_recall_at_1", "t2i_recall_at_10", "i2t_median_rank", "t2i_mean_rank"):
        assert run.data.metrics[key] == pytest.approx(first["metrics"][key])
    tags = run.data.tags
    assert tags["bifocal.inference_cache"] == "miss"
    assert len(tags["bifocal.dataset_fingerprint"]) == 64
    assert len(tags["bifocal.model_fingerprint"]) == 64
    assert tags["bifocal.version.torch"].startswith("2.")
    assert tags["prefect.flow_run_id"]
    assert tags["mlflow.source.git.commit"]
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == tags["bifocal.dataset_fingerprint"][:32]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.json", "report/report.html", "report/per_sample.parquet",
            "report/rejects.csv"} <= artifacts
    queue = {a.path for a in client.list_artifacts(run.info.run_id, "report/review")}
    assert {"report/review/queue.csv", "report/review/queue.jsonl", "report/review/sample.parquet",
            "report/review/review.json", "report/review/review_sheet.html",
            "report/review/label_studio"} <= queue
    # load_table searches runs through the fluent API, so it needs the global tracking URI
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri",
                        config.tracking.tracking_uri)
    table = client.load_table(run.info.experiment_id, "per_sample.json",
                              run_ids=[run.info.run_id])
    assert len(table) == 10 and "i2t_rank" in table.columns

    report_dir = Path(first["report"])
    report = json.loads((report_dir / "report.json").read_text())
    assert report["counts"]["rows_in"] == 11
    assert report["counts"]["items"] + report["counts"]["rejected"] == 11
    assert report["metrics"] == first["metrics"]
    per_sample = pd.read_parquet(report_dir / "per_sample.parquet")
    assert len(per_sample) == 10 and (per_sample["i2t_rank"] >= 1).all()
    review = pd.read_csv(report_dir / "review" / "queue.csv")
    assert len(review) == 4 and set(review["review_strategy"]) == {"worst", "random"}
    assert report["review"]["items"] == 4
    html = (report_dir / "report.html").read_text()
    assert "i2t_recall_at_1" in html and "data:image/jpeg;base64," in html

    second = evaluate(config)
    assert second["inference_cache"] == "hit"
    assert second["metrics"] == first["metrics"]
    assert client.get_run(second["mlflow_run_id"]).data.tags["bifocal.inference_cache"] == "hit"


def test_changed_image_recomputes_only_its_shard(prefect_harness, flow_setup):
    from flows.evaluate import evaluate
    from tests.helpers import draw

    config, tmp_path = flow_setup
    config = config.model_copy(update={"inference": config.inference.model_copy(
        update={"shard_size": 5})})
    assert evaluate(config)["inference_cache"] == "miss"
    draw(tmp_path / "ds" / "images" / "007.png", (5, 5, 5))
    assert evaluate(config)["inference_cache"] == "partial"
    assert evaluate(config)["inference_cache"] == "hit"


def test_failing_run_ends_failed_not_running(prefect_harness, flow_setup):
    from flows.evaluate import evaluate

    config, tmp_path = flow_setup
    model_dir = tmp_path / "broken-model"
    shutil.copytree(config.model.path, model_dir)
    (model_dir / "model.safetensors").write_bytes(b"garbage")
    broken = config.model_copy(update={"model": config.model.model_copy(
        update={"path": str(model_dir)})})
    with pytest.raises(Exception):  # noqa: B017 - any load error; the run state is the point
        evaluate(broken)
    client = MlflowClient(tracking_uri=config.tracking.tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("test-exp").experiment_id],
        filter_string=f"params.`model.path` = '{model_dir}'",
    )
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "bifocal.error" in runs[0].data.tags


def test_intervals_and_slices_on_the_run_and_in_the_report(prefect_harness, tmp_path: Path,
                                                           tiny_clip_dir: Path, monkeypatch):
    import mlflow

    from flows.evaluate import evaluate
    from tasks.stats.bootstrap import BootstrapSettings
    from tasks.stats.estimates import Estimate, interval

    manifest = write_dataset(tmp_path / "ds", n=24)
    config = make_config(tmp_path, tiny_clip_dir, manifest,
                         statistics={"bootstrap": 200, "seed": 3},
                         slices={"columns": ["size", "label", "nope"], "min_size": 7,
                                 "permutations": 500})
    result = evaluate(config)
    run = MlflowClient(tracking_uri=config.tracking.tracking_uri).get_run(result["mlflow_run_id"])
    metrics = run.data.metrics
    report = json.loads((Path(result["report"]) / "report.json").read_text())
    assert set(report["estimates"]) == {k for k in report["metrics"]
                                        if not k.endswith(("_ci_low", "_ci_high"))}
    for key in report["estimates"]:
        low, high = metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"]
        assert low <= metrics[key] <= high
        assert report["metrics"][f"{key}_ci_low"] == pytest.approx(low)
    # the stored per-sample table alone rebuilds every metric and its interval
    table = pd.read_parquet(Path(result["report"]) / "per_sample.parquet")
    scored = table[table["status"] == "scored"]
    settings = BootstrapSettings(200, seed=3)
    for key in ("i2t_recall_at_1", "t2i_recall_at_5", "t2i_median_rank"):
        bounds = interval(Estimate.from_json(report["estimates"][key]), scored, settings)
        assert bounds.estimate == pytest.approx(metrics[key])
        assert (bounds.low, bounds.high) == pytest.approx((metrics[f"{key}_ci_low"],
                                                          metrics[f"{key}_ci_high"]))
    slices = {s["slice"]: s for s in report["slices"]["results"]}
    assert slices["size=small"]["status"] == "scored" and slices["size=big"]["status"] == "scored"
    assert all(slices[f"label={c}"]["status"] == "too small" for c in ("red", "blue"))
    small = table[(table["status"] == "scored") & (table["size"] == "small")]
    assert slices["size=small"]["metrics"]["i2t_recall_at_1"]["value"] == pytest.approx(
        (small["i2t_rank"] <= 1).mean())
    assert metrics["slice.size.small.i2t_recall_at_1"] == pytest.approx(
        (small["i2t_rank"] <= 1).mean())
    assert 0 < slices["size=small"]["headline_vs_rest"]["p"] <= 1
    assert any("'nope'" in w for w in report["warnings"])
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri",
                        config.tracking.tracking_uri)
    logged = MlflowClient(tracking_uri=config.tracking.tracking_uri).load_table(
        run.info.experiment_id, "slices.json", run_ids=[run.info.run_id])
    assert {"size=small", "size=big", "label=red"} <= set(logged["slice"])
