"""End to end: each task kind's evaluation (tiny random models, the evaluate flow) writes a
report.html that opens from disk in headless Chromium with every section, the headline value of
report.json, its plots inline and its thumbnails decoded, without a single request leaving the
file system and without console errors; the same plots are on the MLflow run. A full-page
screenshot per kind is kept (copied to $BIFOCAL_ARTIFACTS when set)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tasks.config_io import build_config
from tests.helpers import write_dataset

pytestmark = pytest.mark.e2e

SECTIONS = ("summary", "metrics", "plots", "examples", "review", "counts")
PLOTS = {
    "retrieval": {"recall_at_k", "ranks", "slices"},
    "captioning": {"caption_scores"},
    "vqa": {"vqa_accuracy"},
    "zero_shot_classification": {"confusion_matrix", "margins", "slices"},
    "matching": {"match_scores", "threshold", "calibration"},
}


@dataclass
class Built:
    kind: str
    result: dict[str, Any]
    report: dict[str, Any]
    folder: Path
    tracking_uri: str
    tmp: Path


def base(tmp: Path, **fields: Any) -> dict[str, Any]:
    return {"review": {"size": 4}, "statistics": {"bootstrap": 200},
            "report": {"destination": str(tmp / "reports"), "examples": 3},
            "tracking": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "r"},
            "work_dir": str(tmp / "work"), **fields}


def with_reject(manifest: Path) -> Path:
    """One more row whose image does not exist: a rejected row with its reason."""
    line = {"id": "gone", "image": "images/missing.png", "captions": ["a red square"],
            "label": "red", "size": "big"}
    manifest.write_text(manifest.read_text() + json.dumps(line) + "\n")
    return manifest


def vqa_manifest(root: Path) -> Path:
    write_dataset(root, n=4)
    rows = [{"id": f"q{i}", "image": f"images/{i:03d}.png", "question": "what color is it",
             "answers": [color] * 9 + ["big"], "question_type": "what color",
             "answer_type": "other"} for i, color in enumerate(["red", "green", "blue",
                                                                "yellow"])]
    manifest = root / "vqa.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def config_for(kind: str, tmp: Path, clip: Path, captioner: Path) -> dict[str, Any]:
    """The kind's settings as tests/flows/test_task_kinds.py configures them."""
    ds = tmp / "ds"
    if kind == "retrieval":
        return base(tmp, model={"path": str(clip)},
                    dataset={"path": str(with_reject(write_dataset(ds, n=8)))},
                    slices={"columns": ["size"], "min_size": 2})
    if kind == "captioning":
        return base(tmp, task=kind, model={"kind": "captioner", "path": str(captioner),
                                           "generation": {"max_new_tokens": 5}},
                    dataset={"path": str(write_dataset(ds, n=6))},
                    metrics=["bleu", "cider", "clip_score"],
                    metric_options={"clip_score": {"model": str(clip)}})
    if kind == "vqa":
        return base(tmp, task=kind, model={"kind": "vqa", "path": str(captioner),
                                           "generation": {"max_new_tokens": 3}},
                    dataset={"path": str(vqa_manifest(ds)),
                             "columns": {"captions": "answers", "label": None}})
    if kind == "zero_shot_classification":
        return base(tmp, task=kind, model={"path": str(clip)},
                    dataset={"path": str(write_dataset(ds, n=8)),
                             "columns": {"captions": None}},
                    zero_shot={"templates": ["a {} square"]},
                    slices={"columns": ["size"], "min_size": 2})
    return base(tmp, task=kind, model={"path": str(clip)},
                dataset={"path": str(write_dataset(ds, n=6))},
                matching={"negatives": "random", "negatives_per_positive": 1,
                          "calibration_fraction": 0.3})


@pytest.fixture(scope="module", params=list(PLOTS))
def built(request: pytest.FixtureRequest, prefect_harness: None, tiny_clip_dir: Path,
          tiny_captioner_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One evaluation per kind (module scope: evaluated once for all its tests)."""
    from flows.evaluate import evaluate

    kind = request.param
    tmp = tmp_path_factory.mktemp(f"report-{kind}")
    config = build_config(config_for(kind, tmp, tiny_clip_dir, tiny_captioner_dir))
    result = evaluate(config)
    folder = Path(result["report"])
    report = json.loads((folder / "report.json").read_text())
    return Built(kind, result, report, folder, str(config.tracking.tracking_uri), tmp)


def keep(shot: Path) -> None:
    if os.environ.get("BIFOCAL_ARTIFACTS"):
        target = Path(os.environ["BIFOCAL_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, target / shot.name)


def test_report_opens_offline_with_every_section(built: Built):
    from tests.browser import chromium_page, external_requests, record_errors, record_requests

    headline = built.report["headline"]
    shot = built.tmp / f"report-{built.kind}.png"
    with chromium_page() as page:
        requests, errors = record_requests(page), record_errors(page)
        page.goto((built.folder / "report.html").as_uri())
        page.wait_for_load_state("load")
        for section in SECTIONS:
            assert page.locator(f"#{section}").count() == 1, section
        row = page.locator(f'tr.headline[data-metric="{headline}"] td.value')
        assert row.inner_text() == f"{built.report['metrics'][headline]:.4f}"
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
        assert images and all(width > 0 for width in images), images
        plots = page.eval_on_selector_all("figure.plot", "els => els.map(e => e.id)")
        assert set(plots) == {f"plot-{name}" for name in PLOTS[built.kind]}
        assert page.locator("figure.plot svg").count() == len(plots)
        text = page.inner_text("body")
        page.screenshot(path=str(shot), full_page=True)
    assert external_requests(requests) == [] and errors == []
    assert built.report["run_name"] in text and built.report["mlflow_run_id"] in text
    keep(shot)
    assert shot.stat().st_size > 20_000


def test_the_plots_are_logged_on_the_run(built: Built):
    client = MlflowClient(tracking_uri=built.tracking_uri)
    logged = {Path(a.path).name for a in client.list_artifacts(built.result["mlflow_run_id"],
                                                               "plots")}
    assert logged == {f"{name}.png" for name in PLOTS[built.kind]}


def test_kind_specific_contents(built: Built):
    html = (built.folder / "report.html").read_text()
    counts = built.report["counts"]
    if built.kind == "retrieval":  # the rejected row and its reason; the marked retrievals
        assert counts["rejected_rows"] == 1 and "image file not found" in html
        assert 'id="slices"' in html and "size=small" in html
        assert 'class="hit"' in html and "Retrieved (top 3)" in html
    elif built.kind == "captioning":
        assert "Prediction" in html and "References" in html
    elif built.kind == "vqa":
        assert "what color is it" in html and "Human answers" in html and "×9" in html
    elif built.kind == "zero_shot_classification":
        assert "Predicted" in html and "Label" in html
    else:
        assert "Pair text" in html and "threshold" in html
    assert 'href="review/review_sheet.html"' in html
    assert len(html) < 600_000
