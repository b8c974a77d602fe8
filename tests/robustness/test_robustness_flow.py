"""The robustness sweep inside ``bifocal run`` (the evaluate flow) on the tiny CLIP, for retrieval
and zero-shot classification: 2 corruptions x 2 severities + 1 text perturbation. Each variant's
metrics (in MLflow and report.json) equal an independent evaluation of a dataset folder
corrupted (or a manifest / config perturbed) here by hand; the summaries follow their
definitions; a rerun loads every variant from the inference cache and reuses every image."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image

from tasks.config import EvalConfig, RobustnessConfig
from tasks.config_io import build_config
from tasks.robustness.corruptions import corrupt
from tasks.robustness.perturbations import perturb_text
from tests.helpers import write_dataset

pytestmark = pytest.mark.e2e

SEED = 7
CORRUPTIONS, SEVERITIES = ["gaussian_noise", "pixelate"], [2, 5]
TEXT = {"name": "char_swap", "rate": 0.3}
KEY = re.compile(r"^[/\w.\- ]+$")
TEMPLATES = ["a {} square", "a picture of a {} square"]


def config_for(tmp_path: Path, task: str, clip: Path, robustness: dict | None = None,
               formats: tuple[str, ...] = ("json", "html")) -> EvalConfig:
    manifest = write_dataset(tmp_path / "ds", n=8)
    dataset: dict = {"path": str(manifest)}
    extra: dict = {}
    if task == "zero_shot_classification":
        dataset["columns"] = {"captions": None}
        extra["zero_shot"] = {"templates": TEMPLATES}
    return build_config({
        "task": task, "model": {"path": str(clip)}, "dataset": dataset, **extra,
        "robustness": robustness or {"corruptions": CORRUPTIONS, "severities": SEVERITIES,
                                     "text": [TEXT], "seed": SEED},
        "statistics": {"bootstrap": 200}, "review": {"size": 2},
        "report": {"destination": str(tmp_path / "reports"), "formats": list(formats)},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "r"},
        "work_dir": str(tmp_path / "work"),
    })


def corrupted_folder(source: Path, target: Path, corruption: str, severity: int) -> Path:
    """A copy of the dataset folder whose images are corrupted here, one by one."""
    shutil.copytree(source, target)
    for path in sorted((target / "images").glob("*.png")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with Image.open(path) as image:
            pixels = corrupt(image.convert("RGB"), corruption, severity, seed=SEED,
                             image_sha256=digest)
        Image.fromarray(pixels).save(path)
    return target / "data.jsonl"


def perturbed_manifest(source: Path, target: Path) -> Path:
    """A copy of the dataset folder whose captions are perturbed here."""
    shutil.copytree(source, target)
    lines = [json.loads(line) for line in (target / "data.jsonl").read_text().splitlines()]
    for line in lines:
        line["captions"] = [perturb_text(c, TEXT["name"], TEXT["rate"], seed=SEED)
                            for c in line["captions"]]
    (target / "data.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return target / "data.jsonl"


def independent_metrics(config: EvalConfig, manifest: Path, work: Path,
                        templates: list[str] | None = None) -> dict[str, float]:
    """The plain data -> inference -> score steps on another folder, with their own cache."""
    from tasks.steps import load_data, run_inference, score

    update = {"dataset": config.dataset.model_copy(update={"path": str(manifest)}),
              "robustness": RobustnessConfig()}
    if templates is not None:
        update["zero_shot"] = config.zero_shot.model_copy(update={"templates": templates})
    plain = config.model_copy(update=update)
    dataset = load_data.fn(plain, work)
    inference = run_inference.fn(dataset, plain, work / "cache")
    assert inference.cache_state == "miss"
    return score.fn(dataset, inference, plain, work).metrics


def outputs_changed(clean: Path, variant: Path) -> bool:
    """Whether any numeric per-sample column (ranks, margins) differs from the clean run's."""
    before = pd.read_parquet(clean / "per_sample.parquet").select_dtypes("number")
    after = pd.read_parquet(variant / "per_sample.parquet").select_dtypes("number")
    return list(before.columns) == list(after.columns) \
        and not np.allclose(before, after, equal_nan=True)


@pytest.mark.parametrize("task", ["retrieval", "zero_shot_classification"])
def test_robustness_sweep_in_the_evaluate_flow(prefect_harness, tmp_path: Path,
                                               tiny_clip_dir: Path, task: str):
    from flows.evaluate import evaluate

    config = config_for(tmp_path, task, tiny_clip_dir)
    result = evaluate(config)
    logged = MlflowClient(config.tracking.tracking_uri).get_run(
        result["mlflow_run_id"]).data.metrics
    report_dir = Path(result["report"])
    report = json.loads((report_dir / "report.json").read_text())
    section = report["robustness"]
    labels = [f"{c}.{s}" for c in CORRUPTIONS for s in SEVERITIES] + ["text.char_swap"]
    assert [v["variant"] for v in section["variants"]] == labels
    assert all(KEY.match(k) for k in logged)

    headline = section["headline"]
    run_dir = Path(config.work_dir) / "runs" / result["mlflow_run_id"]
    clean = result["metrics"][headline]
    for corruption in CORRUPTIONS:
        for severity in SEVERITIES:
            folder = tmp_path / f"{corruption}-{severity}"
            manifest = corrupted_folder(tmp_path / "ds", folder, corruption, severity)
            expected = independent_metrics(config, manifest, folder / "work")
            variant = section["corruptions"][corruption]["severities"][str(severity)]
            assert variant == pytest.approx(expected, rel=1e-9, abs=1e-12)
            variant_dir = run_dir / "robustness" / f"{corruption}.{severity}"
            assert outputs_changed(run_dir / "scores", variant_dir / "scores")
            items = pd.read_parquet(variant_dir / "data" / "items.parquet")
            # the images the variant ran on are the bytes corrupted by hand
            assert list(items["image_sha256"]) == [
                hashlib.sha256((folder / image).read_bytes()).hexdigest()
                for image in items["image"]]
            for key, value in expected.items():
                assert logged[f"robust.{corruption}.{severity}.{key}"] == pytest.approx(value)
        values = [section["corruptions"][corruption]["severities"][str(s)][headline]
                  for s in SEVERITIES]
        mean = float(np.mean(values))
        assert logged[f"robust.{corruption}.mean.{headline}"] == pytest.approx(mean)
        if clean:
            assert logged[f"robust.{corruption}.relative_drop.{headline}"] == pytest.approx(
                (clean - mean) / clean)
        if clean < 1:
            assert logged[f"robust.{corruption}.ce.{headline}"] == pytest.approx(
                np.mean([1 - v for v in values]) / (1 - clean))
    assert logged[f"robust.all.mean.{headline}"] == pytest.approx(np.mean(
        [logged[f"robust.{c}.mean.{headline}"] for c in CORRUPTIONS]))

    text_dir = tmp_path / "text"
    if task == "retrieval":
        expected = independent_metrics(config, perturbed_manifest(tmp_path / "ds", text_dir),
                                       text_dir / "work")
    else:
        templates = [perturb_text(t, TEXT["name"], TEXT["rate"], seed=SEED, protect="{}")
                     for t in TEMPLATES]
        assert templates != TEMPLATES
        expected = independent_metrics(config, tmp_path / "ds" / "data.jsonl", text_dir,
                                       templates)
    assert section["text"]["char_swap"]["metrics"] == pytest.approx(expected, rel=1e-9)
    for key, value in expected.items():
        assert logged[f"robust.text.char_swap.{key}"] == pytest.approx(value)

    html = (report_dir / "report.html").read_text()
    assert 'id="robustness"' in html and 'id="plot-robustness_corruptions"' in html
    artifacts = {a.path for a in MlflowClient(config.tracking.tracking_uri).list_artifacts(
        result["mlflow_run_id"], "plots")}
    assert "plots/robustness_corruptions.png" in artifacts
    assert (report_dir / "robustness.csv").is_file()

    again = evaluate(config)
    rerun = json.loads((Path(again["report"]) / "report.json").read_text())["robustness"]
    assert [v["inference_cache"] for v in rerun["variants"]] == ["hit"] * len(labels)
    assert all(v["images"] == {"written": 0, "reused": 8, "undecodable": 0}
               for v in rerun["variants"] if v["type"] == "corruption")
    assert rerun["model_loads"] == 0 and section["model_loads"] == 1
    assert rerun["corruptions"] == section["corruptions"] and rerun["text"] == section["text"]


def test_adversarial_attacks_in_the_evaluate_flow(prefect_harness, tmp_path: Path,
                                                  tiny_clip_dir: Path):
    """The attacks' metrics (tasks.robustness.adversarial) reach MLflow, report.json, the
    report's table and accuracy-vs-epsilon plot, and the per-sample table."""
    from flows.evaluate import evaluate

    settings = {"adversarial": {"attacks": ["fgsm", "pgd"], "epsilons": [1 / 255, 8 / 255],
                                "steps": 2, "limit": 4}}
    config = config_for(tmp_path, "zero_shot_classification", tiny_clip_dir, settings,
                        formats=("json", "html", "parquet"))
    result = evaluate(config)
    client = MlflowClient(config.tracking.tracking_uri)
    logged = client.get_run(result["mlflow_run_id"]).data.metrics
    report_dir = Path(result["report"])
    adversarial = json.loads((report_dir / "report.json").read_text())["robustness"][
        "adversarial"]
    assert adversarial["skipped"] is None and adversarial["curve"]
    assert {k: v for k, v in adversarial["metrics"].items() if np.isfinite(v)} == \
        pytest.approx({k: v for k, v in logged.items() if k.startswith("adv.")})
    assert any(k.startswith("adv.pgd.eps_") for k in logged)
    html = (report_dir / "report.html").read_text()
    assert 'id="robustness-adversarial"' in html and 'id="plot-robustness_epsilon"' in html
    assert (report_dir / "per_sample_adversarial.parquet").is_file()
    plots = {a.path for a in client.list_artifacts(result["mlflow_run_id"], "plots")}
    assert "plots/robustness_epsilon.png" in plots
