"""report.html from synthetic report.json documents and per-sample tables: every section for
every kind, hostile texts escaped, the edge cases (empty slice, skipped metric, rejects, every
item failed), run links, bounded galleries with small embedded thumbnails; the report folder
writer, the figures for the MLflow run, and the retrieval columns the galleries show."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.config import ReportFormat
from tasks.kinds.retrieval.score import most_similar, top_caption_columns
from tasks.report import links
from tasks.report.build import write_report
from tasks.report.figures import run_figures
from tasks.report.galleries import pick
from tasks.report.html import render
from tests.helpers import COLORS, draw

SECTIONS = ("summary", "metrics", "plots", "examples", "review", "counts")
# a reference that a browser would fetch: not an in-page #id, a data: URI or an XML namespace
EXTERNAL = re.compile(r'(?:href|src)="(?!#|data:|review/)|url\((?!#)|@import'
                      r'|https?://(?!www\.w3\.org)')
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def images(folder: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        draw(path, list(COLORS.values())[index % 4], size=20)
        paths.append(str(path))
    return paths


def report_for(task: str, **extra: Any) -> dict[str, Any]:
    """A report.json document as build_report writes it (small)."""
    headline = {"retrieval": "i2t_recall_at_1", "captioning": "cider", "vqa": "vqa_accuracy",
                "zero_shot_classification": "accuracy", "matching": "accuracy"}[task]
    return {
        "task": task, "run_name": "tiny@data", "mlflow_run_id": "run123",
        "mlflow_tracking_uri": "sqlite:///m.db", "created_at": "2025-01-02T03:04:05+00:00",
        "config": {"model": {"path": "/models/tiny", "kind": "dual_encoder"},
                   "dataset": {"path": "/data/d.jsonl"}, "report": {"examples": 2}, "seed": 0,
                   "vqa": {"question_column": "question"}},
        "fingerprints": {"dataset": "d" * 64, "model": "m" * 64},
        "counts": {"rows_in": 7, "items": 6, "rejected_rows": 1, "failed": 1},
        "metrics": {headline: 0.5, f"{headline}_ci_low": 0.25, f"{headline}_ci_high": 0.75,
                    "mean_rank": 2.5},
        "higher_is_better": {headline: True, "mean_rank": False},
        "statistics": {"bootstrap": 50, "level": 0.9, "seed": 0}, "headline": headline,
        "row_key": "pair_id" if task == "matching" else "item_id", "skipped": {},
        "warnings": [], "rejects_by_reason": {"item: image file not found": 1},
        "review": {"items": 3, "strategies": {"worst": 2, "random": 1}, "warnings": [],
                   "files": ["review/review_sheet.html", "review/queue.csv"]},
        "prefect": {}, **extra,
    }


def table_for(task: str, paths: list[str]) -> pd.DataFrame:
    """Per-sample rows like each kind's scoring writes (the last one failed)."""
    n = len(paths)
    status = ["scored"] * (n - 1) + ["failed"]
    base = pd.DataFrame({"item_id": [f"item-{i}" for i in range(n)], "image_path": paths,
                         "captions": [["a red square", "a picture"]] * n, "status": status,
                         "reason": [""] * (n - 1) + ["image: decode failed: truncated"]})
    rng = np.random.default_rng(0)
    if task == "retrieval":
        return base.assign(i2t_rank=[*range(1, n), 0], t2i_ranks=[[1, 2]] * (n - 1) + [[]],
                           margin=rng.random(n), top_captions=[["a red square", "x"]] * n,
                           top_correct=[[True, False]] * n)
    if task == "captioning":
        return base.assign(prediction="a square", cider=rng.random(n),
                           clip_score=rng.random(n))
    if task == "vqa":
        return base.assign(question="what color", prediction="red",
                           captions=[["red"] * 9 + ["big"]] * n, vqa_accuracy=rng.random(n))
    if task == "zero_shot_classification":
        return base.assign(label="red", prediction=["red", "blue"] * (n // 2) + ["red"] * (n % 2),
                           correct=[True, False] * (n // 2) + [True] * (n % 2),
                           margin=rng.random(n))
    return base.assign(pair_id=[f"p{i}" for i in range(n)], text="a red square",
                       label=[1, 0] * (n // 2) + [1] * (n % 2), score=rng.random(n),
                       correct=[True, False] * (n // 2) + [True] * (n % 2), margin=rng.random(n))


KINDS = ("retrieval", "captioning", "vqa", "zero_shot_classification", "matching")


@pytest.mark.parametrize("task", KINDS)
def test_every_section_renders_for_each_kind(task: str, tmp_path: Path):
    page = render(report_for(task), table_for(task, images(tmp_path, 9)))
    for section in SECTIONS:
        assert f'id="{section}"' in page, section
    assert 'data-metric="mean_rank"' in page and "↓" in page and "↑" in page
    assert '<tr class="headline"' in page and "[0.2500, 0.7500]" in page
    assert "90% interval" in page
    assert page.count("<svg") >= 1 and "Content-Security-Policy" in page
    assert 'href="review/review_sheet.html"' in page and "worst" in page
    assert "image file not found" in page and "image: decode failed" in page
    thumbnails = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert 0 < len(thumbnails) <= 3 * 2  # three galleries of report.examples = 2
    for data in thumbnails:
        assert max(Image.open(io.BytesIO(base64.b64decode(data))).size) <= 160
    assert "<script" not in page.lower() and not EXTERNAL.search(page)


def test_hostile_texts_are_escaped_everywhere(tmp_path: Path):
    report = report_for("captioning", run_name=HOSTILE, warnings=[HOSTILE],
                         skipped={"clip_score": HOSTILE}, rejects_by_reason={HOSTILE: 1},
                         slices={"results": [{"slice": f"c={HOSTILE}", "size": 3,
                                              "status": "scored", "metrics": {}}]})
    report["config"]["model"]["path"] = HOSTILE
    report["review"]["strategies"] = {HOSTILE: 1}
    table = table_for("captioning", images(tmp_path, 6))
    table["item_id"] = HOSTILE
    table["prediction"] = HOSTILE
    table["captions"] = [[HOSTILE]] * 6
    table["reason"] = HOSTILE
    page = render(report, table)
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 8


def test_edge_cases_empty_slice_skipped_metric_rejects_and_all_failed(tmp_path: Path):
    slices = {"results": [
        {"slice": "size=big", "size": 0, "status": "too small", "metrics": {}},
        {"slice": "size=small", "size": 5, "status": "scored",
         "metrics": {"cider": {"value": 0.4, "ci_low": 0.1, "ci_high": 0.7}},
         "headline_vs_rest": {"delta": 0.1, "p": 0.2, "p_holm": 0.4}}], "gaps": {}}
    report = report_for("captioning", skipped={"clip_score": "no CLIP model configured"},
                        slices=slices)
    table = table_for("captioning", images(tmp_path, 6))
    page = render(report, table)
    assert 'id="skipped"' in page and "no CLIP model configured" in page
    assert "size=big" in page and "too small" in page and 'id="plot-slices"' in page
    assert "0.4000 [0.1000, 0.7000]" in page and "0.4000</td>" in page  # Holm p
    failed = table.assign(status="failed", cider=np.nan, clip_score=np.nan)
    page = render(report | {"metrics": {}}, failed)
    for section in SECTIONS:
        assert f'id="{section}"' in page, section
    assert "No scored rows (6 failed of 6): there is nothing to plot." in page
    assert "<svg" not in page and "No scored rows to show." in page
    assert 'data-count="items scored"' in page and "items scored <b>0</b>" in page
    assert "Failed (6)" in page and "no metrics" in page


def test_run_links_only_for_servers():
    report = report_for("vqa", mlflow_tracking_uri="https://mlflow.example.org",
                        prefect={"flow_run_id": "f-1", "flow_run_name": "brave-fox",
                                 "flow_run_url": "https://prefect.example.org/runs/flow-run/f-1"})
    page = render(report, pd.DataFrame({"status": []}))
    assert 'href="https://mlflow.example.org/#/runs/run123"' in page
    assert 'href="https://prefect.example.org/runs/flow-run/f-1"' in page
    local = render(report_for("vqa", prefect={"flow_run_id": "f-1", "flow_run_name": "fox"}),
                   pd.DataFrame({"status": []}))
    assert "<a href" not in local.replace('<a href="review/', "")
    assert "<code>fox (f-1)</code>" in local and "<code>run123</code>" in local
    assert links.mlflow_run_url("http://u:pw@host:5000/", "r") == "http://host:5000/#/runs/r"


def test_prefect_ui_only_for_a_real_server(monkeypatch: pytest.MonkeyPatch):
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.team:4200/api"}):
        assert links.prefect_ui_url() == "http://prefect.team:4200"
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:8123/api",
                                     PREFECT_UI_URL: "http://127.0.0.1:8123"}):
        server = SimpleNamespace(running=True, port=8123, api_url="http://127.0.0.1:8123/api")
        module = SimpleNamespace(SubprocessASGIServer=SimpleNamespace(_instances={None: server}))
        monkeypatch.setitem(__import__("sys").modules, "prefect.server.api.server", module)
        assert links.prefect_ui_url() is None  # the temporary server of this process
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert links.prefect_ui_url() is None  # ephemeral mode
    assert links.prefect_flow_run() == {}  # outside a flow run


def test_galleries_are_bounded_disjoint_seeded_and_confident_mistakes_first():
    table = pd.DataFrame({"item_id": [f"i{k}" for k in range(30)],
                          "correct": [k % 2 == 0 for k in range(30)],
                          "margin": np.linspace(0, 1, 30)})
    chosen = pick(table, "zero_shot_classification", count=4, seed=3)
    assert [len(rows) for rows in chosen.values()] == [4, 4, 4]
    ids = [i for rows in chosen.values() for i in rows["item_id"]]
    assert len(set(ids)) == 12
    assert chosen["best"]["item_id"].tolist() == ["i28", "i26", "i24", "i22"]
    assert chosen["worst"]["item_id"].tolist() == ["i29", "i27", "i25", "i23"]
    again = pick(table, "zero_shot_classification", count=4, seed=3)
    assert again["random"]["item_id"].tolist() == chosen["random"]["item_id"].tolist()
    few = pick(table.head(2), "zero_shot_classification", count=4, seed=3)
    assert [len(rows) for rows in few.values()] == [1, 1, 0]
    ranks = pick(pd.DataFrame({"i2t_rank": [5, 0, 1, 9, 2, 3]}), "retrieval", count=1, seed=0)
    assert ranks["best"]["i2t_rank"].tolist() == [1] and ranks["worst"]["i2t_rank"].tolist() == [9]


def test_unreadable_images_leave_a_reason(tmp_path: Path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    table = table_for("vqa", [str(broken), str(tmp_path / "missing.png"), ""] * 2)
    page = render(report_for("vqa"), table)
    assert "Image unavailable:" in page and "no image path" in page
    assert "data:image/jpeg" not in page


def test_write_report_and_run_figures(tmp_path: Path):
    report = report_for("vqa")
    table = table_for("vqa", images(tmp_path, 4))
    written = write_report(tmp_path / "out", report, table, {}, None, pd.DataFrame(),
                           [ReportFormat.json, ReportFormat.html])
    assert {p.name for p in written} == {"report.json", "report.html"}
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="plot-vqa_accuracy"' in page and "<svg" in page
    stored = json.loads((tmp_path / "out" / "report.json").read_text())
    assert stored["report_version"] == 1
    assert list(run_figures(tmp_path / "out", None, table)) == ["vqa_accuracy"]
    assert list(run_figures(tmp_path / "none", report, table)) == ["vqa_accuracy"]
    assert run_figures(tmp_path / "none", None, table) == {}


def test_figures_are_logged_on_the_run_or_spooled(tmp_path: Path):
    from mlflow import MlflowClient

    from tasks.tracking import mlflow_log as ml
    from tasks.tracking import spool

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    run_id = ml.start_run(uri, "exp", "r", {})
    figure = run_figures(tmp_path, report_for("vqa"), table_for("vqa", images(tmp_path, 3)))
    ml.log_figure(uri, run_id, figure["vqa_accuracy"], "plots/vqa_accuracy.png")
    logged = MlflowClient(uri).list_artifacts(run_id, "plots")
    assert [a.path for a in logged] == ["plots/vqa_accuracy.png"]
    box = spool.RunSpool(tmp_path / "spool" / "run")
    ml._keep_figure(box, figure["vqa_accuracy"], "plots/vqa_accuracy.png")
    (op,) = box.pending()
    assert json.loads((op / "op.json").read_text())["artifact_path"] == "plots"
    assert (op / "files" / "vqa_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_top_captions_are_the_most_similar_texts_marked_when_correct():
    sims = np.array([[0.1, 0.9, 0.5, 0.9], [0.3, 0.2, 0.1, 0.0]])
    np.testing.assert_array_equal(most_similar(sims, 3), [[1, 3, 2], [0, 1, 2]])
    assert most_similar(sims[:, :2], 3).shape == (2, 2)
    rng = np.random.default_rng(0)
    big = rng.normal(size=(5, 40))
    np.testing.assert_array_equal(most_similar(big, 3), np.argsort(-big, axis=1)[:, :3])
    table = pd.DataFrame({"item_id": ["a", "b", "c"]})
    ok = np.array([True, False, True])
    captions = np.array(["a1", "a2", "c1"], dtype=object)
    out = top_caption_columns(table, ok, captions, np.array([[1, 2], [2, 0]]),
                              np.array([0, 0, 1]))
    assert out["top_captions"].tolist() == [["a2", "c1"], [], ["c1", "a1"]]
    assert out["top_correct"].tolist() == [[True, False], [], [True, False]]
