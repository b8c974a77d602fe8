"""``bifocal run`` with task text_to_image end to end: a clean and a degraded copy of generated
images against one reference folder, metrics in MLflow and report.json, CLIPScore against
torchmetrics' CLIPScore on the same tiny CLIP."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.kinds.test_text_to_image import sets  # noqa: F401 - the fixture
from tests.metrics.test_clip_score import torchmetrics_per_sample

pytestmark = pytest.mark.e2e

METRICS = {"fid", "kid", "kid_std", "precision", "recall", "clip_score"}


def bifocal_run(config: dict, path: Path) -> dict:
    """``bifocal run CONFIG --json`` in this process; the printed result."""
    from flows.cli import main

    path.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["run", str(path), "--json"])
    assert code == 0, err.getvalue()[-2000:]
    return json.loads(out.getvalue())


def run_config(tmp_path: Path, manifest: Path, references: Path, model: Path, name: str
               ) -> dict:
    return {
        "task": "text_to_image", "model": {"path": str(model)},
        "dataset": {"path": str(manifest), "columns": {"captions": "prompt", "label": None}},
        "text_to_image": {"references": str(references)},
        "metric_options": {"kid": {"subsets": 20}},
        "review": {"size": 4}, "statistics": {"bootstrap": 200},
        "report": {"destination": str(tmp_path / "reports")},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "experiment": "t2i", "run_name": name},
        "work_dir": str(tmp_path / "work"),
    }


def test_bifocal_run_text_to_image(prefect_harness, tmp_path: Path, sets,  # noqa: F811
                                   tiny_clip_dir: Path):
    clean = bifocal_run(run_config(tmp_path, sets["clean"], sets["references"], tiny_clip_dir,
                                   "clean"), tmp_path / "clean.yaml")
    degraded = bifocal_run(run_config(tmp_path, sets["degraded"], sets["references"],
                                      tiny_clip_dir, "degraded"), tmp_path / "degraded.yaml")
    assert set(clean["metrics"]) >= METRICS and set(degraded["metrics"]) >= METRICS
    assert degraded["metrics"]["fid"] > 2 * clean["metrics"]["fid"] > 0
    assert degraded["inference_cache"] == "partial"  # the references' features were cached

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(clean["mlflow_run_id"])
    for key in METRICS | {"clip_score_ci_low", "clip_score_ci_high", "precision_ci_low"}:
        assert run.data.metrics[key] == pytest.approx(clean["metrics"][key]), key
    assert run.data.params["text_to_image.references"] == str(sets["references"])
    assert run.data.tags["bifocal.task"] == "text_to_image"
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "report")}
    assert "report/per_sample_references.parquet" in artifacts

    report = Path(clean["report"])
    summary = json.loads((report / "report.json").read_text())
    assert summary["task"] == "text_to_image" and summary["headline"] == "clip_score"
    assert summary["metrics"]["fid"] == clean["metrics"]["fid"]
    assert summary["higher_is_better"]["fid"] is False
    assert summary["counts"]["references_used"] == 16
    assert summary["estimates"]["clip_score"]["statistic"] == "mean"
    html = (report / "report.html").read_text()
    assert "fid" in html and "Prompt" in html and "data:image/jpeg" in html

    per_sample = pd.read_parquet(report / "per_sample.parquet")
    expected = torchmetrics_per_sample(tiny_clip_dir, list(per_sample["image_path"]),
                                       list(per_sample["prompt"]))
    # torchmetrics reports 100 * max(cos, 0); CLIP-S is 2.5 * max(cos, 0)
    assert np.allclose(per_sample["clip_score"] * 40, expected, atol=1e-3)
