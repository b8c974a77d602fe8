"""``bifocal run --compare-split``: both splits evaluated, the gap of every metric on the
evaluated split's MLflow run."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from flows.cli import main
from tests.helpers import write_dataset

pytestmark = pytest.mark.e2e


def split_manifest(root: Path, n: int = 12) -> Path:
    """``write_dataset``'s items, every third one in the test split, the rest in train."""
    manifest = write_dataset(root, n=n)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for index, row in enumerate(rows):
        row["split"] = "test" if index % 3 == 0 else "train"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def test_compare_split_logs_every_metric_gap(prefect_harness, tmp_path: Path, tiny_clip_dir):
    manifest = split_manifest(tmp_path / "ds")
    config = {"task": "retrieval", "model": {"path": str(tiny_clip_dir)},
              "dataset": {"path": str(manifest), "split": "test"},
              "review": {"size": 0}, "statistics": {"bootstrap": 200},
              "report": {"destination": str(tmp_path / "reports")},
              "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}",
                           "experiment": "gap"},
              "work_dir": str(tmp_path / "work")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = io.StringIO()  # not capsys: Prefect's console handler outlives a test's capture
    with redirect_stdout(out):
        assert main(["run", str(path), "--compare-split", "train"]) == 0
    printed = out.getvalue()
    assert "generalisation gap (train - test)" in printed
    client = MlflowClient(config["tracking"]["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("gap").experiment_id])
    assert len(runs) == 2
    test_run = next(r for r in runs if "bifocal.gap_run" in r.data.tags)
    train_run = client.get_run(test_run.data.tags["bifocal.gap_run"])
    assert train_run.info.run_name.endswith("[train]")
    metrics, train = test_run.data.metrics, train_run.data.metrics
    for key in ("i2t_recall_at_1", "t2i_recall_at_5"):
        assert metrics[f"train.{key}"] == train[key]
        assert metrics[f"gap.{key}"] == pytest.approx(train[key] - metrics[key])
        assert metrics[f"gap.{key}_ci_low"] <= metrics[f"gap.{key}"] \
            <= metrics[f"gap.{key}_ci_high"]


def test_compare_split_without_a_split_is_a_config_error(tmp_path: Path, tiny_clip_dir):
    manifest = split_manifest(tmp_path / "ds")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": str(tiny_clip_dir)},
                                    "dataset": {"path": str(manifest)}}))
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["run", str(path), "--compare-split", "train"]) == 2
    assert "--compare-split needs dataset.split" in err.getvalue()
