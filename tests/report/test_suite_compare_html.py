"""suite_report.html and comparison.html: the renderers on data built here (sections, numbers,
escaping, failures, no changed items, no gate), then a real small suite and a real comparison
opened from disk in headless Chromium (offline, no broken image, no console error)."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.comparison import RunData, compare_runs, comparison_document
from tasks.comparison.html import (
    CHANGED_ROWS,
    ComparisonReport,
    comparison_media,
    render_comparison_report,
    thumbnail,
)
from tasks.config import GateRule
from tasks.gate import check_rules
from tasks.stats.bootstrap import BootstrapSettings
from tasks.stats.estimates import mean
from tasks.suite import Outcome, build_leaderboard, leaderboard_records
from tasks.suite.html import SuiteReport, render_suite_report
from tests.browser import chromium_page, external_requests, record_errors, record_requests
from tests.helpers import draw, write_dataset

HOSTILE = '<script>alert("x")</script>'
SETTINGS = BootstrapSettings(resamples=200, seed=0)


def section(html: str, name: str) -> str:
    """The ``<section id=name>`` element's markup."""
    found = re.search(rf'<section[^>]*id="{name}"[^>]*>(.*?)</section>', html, re.S)
    assert found, f"no section {name}"
    return found.group(1)


def offline(html: str) -> bool:
    """Nothing that a browser would fetch: no src/href to a remote or relative address."""
    return not re.search(r'(?:src|href)="(?!data:|#)[^"]', re.sub(r'<a href="https?://[^"]*"',
                                                                  "<a", html))


# ---- suite report -------------------------------------------------------------------------------


def suite_outcomes() -> list[Outcome]:
    def ok(label: str, metrics: dict[str, float]) -> Outcome:
        return Outcome(label, "ok", result={"mlflow_run_id": f"run-{label}", "run_name": label,
                                            "metrics": metrics, "report": ""})

    return [
        ok("a@x", {"r1": 0.5, "r1_ci_low": 0.4, "r1_ci_high": 0.6, "mean_rank": 3.0}),
        ok("b@x", {"r1": 0.7, "r1_ci_low": 0.6, "r1_ci_high": 0.8, "mean_rank": 2.0}),
        ok("a@y", {"r1": 0.9, "r1_ci_low": 0.85, "r1_ci_high": 0.95, "mean_rank": 5.0}),
        Outcome("b@y", "failed", error=f"ModelError: {HOSTILE} broken", mlflow_run_id="run-b@y"),
        Outcome(f"{HOSTILE}@x", "skipped", error="not run: fail_fast stopped the suite"),
    ]


def suite_report(**changes: Any) -> SuiteReport:
    frame = build_leaderboard(suite_outcomes(), {"mean_rank": False})
    gate = {"status": "passed", "passed": True, "candidate_run": "run-b@x",
            "baseline_selector": "models:/clip@champion", "baseline_run": "run-a@x",
            "reason": "all 1 rule(s) held", "notes": ["baseline: models:/clip@champion"],
            "rules": [{"metric": "r1", "delta": 0.2, "ci_low": 0.05, "ci_high": 0.35,
                       "pvalue": 0.01, "p_holm": 0.01, "allowed_drop": 0.01, "alpha": 0.05,
                       "held": True, "reason": "improved by 0.2000"}],
            "promoted": {"model_name": "clip", "version": "3", "alias": "champion",
                         "run_id": "run-b@x"}}
    values = dict(name=f"nightly {HOSTILE}", date="2025-01-02 03:04 UTC", run_id="parent-1",
                  run_link="https://mlflow.example/#/experiments/1/runs/parent-1",
                  tracking_uri="https://mlflow.example", leaderboard=leaderboard_records(frame),
                  higher_is_better=frame.attrs["higher_is_better"],
                  models=["a", "b", HOSTILE], datasets=["x", "y"], headline="r1",
                  gate_setup="b@x vs models:/clip@champion", promote_setup="clip@champion",
                  gate=gate, run_links={"run-a@x": "https://mlflow.example/#/runs/run-a@x"})
    return SuiteReport(**(values | changes))


def test_suite_report_shows_grid_leaderboard_plots_failures_and_gate():
    html = render_suite_report(suite_report())
    assert html.startswith("<!doctype html>") and "Content-Security-Policy" in html
    assert "<h1>Suite · nightly &lt;script&gt;" in html and "2025-01-02 03:04 UTC" in html
    assert '<a href="https://mlflow.example/#/experiments/1/runs/parent-1">' in html
    grid = section(html, "grid")
    assert "<tr><th>a</th><td>" in grid and grid.count("<tr>") == 4  # header + 3 models
    assert grid.count('class="badge ok"') == 3 and grid.count('class="badge failed"') == 1
    assert grid.count('class="badge skipped"') == 1
    assert '<a href="https://mlflow.example/#/runs/run-a@x"><code>run-a@x</code></a>' in grid

    board = section(html, "leaderboard")
    assert "r1 ↑" in board and "mean_rank ↓" in board  # directions, lower for ranks
    best = re.findall(r'class="num best" data-metric="(\w+)" data-value="([\d.]+)">', board)
    assert sorted(best) == [("mean_rank", "2.0"), ("r1", "0.7")]  # best of x; y has one model
    assert "0.7000 <span" in board and "[0.6000, 0.8000]" in board
    assert "0.9000" in board and "[0.8500, 0.9500]" in board and "★" in board
    assert board.index(">x<") < board.index(">y<")  # grouped by dataset

    plots = section(html, "plots")
    # the headline and metrics with intervals are plotted (mean_rank has none here)
    assert plots.count("<svg ") == 1 and 'aria-label="r1:' in plots
    assert "<?xml" not in plots and "<metadata>" not in plots

    failures = section(html, "failures")
    assert "ModelError: &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; broken" in failures
    assert "b@y" in failures and "fail_fast stopped" in failures

    gate = section(html, "gate")
    assert 'class="badge passed"' in gate and "b@x vs models:/clip@champion" in gate
    assert "+0.2000" in gate and "[+0.0500, +0.3500]" in gate and "improved by 0.2000" in gate
    assert "Promoted: <code>clip</code> version 3 is now <code>@champion</code>" in gate
    assert HOSTILE not in html and "javascript:" not in html and offline(html)


def test_suite_report_is_deterministic_and_figure_ids_do_not_collide():
    first, second = (render_suite_report(suite_report()) for _ in range(2))
    assert first == second
    ids = re.findall(r'\bid="([^"]+)"', first)
    assert len(ids) == len(set(ids))


def test_suite_report_without_gate_or_results_still_renders():
    failed = [Outcome("a@x", "failed", error="DataError: no items")]
    frame = build_leaderboard(failed)
    html = render_suite_report(suite_report(
        leaderboard=leaderboard_records(frame), higher_is_better={}, models=["a"],
        datasets=["x"], gate_setup=None, promote_setup=None, gate=None, run_links={},
        run_link="mlflow ui --backend-store-uri sqlite:///m.db  (then open run parent-1)"))
    assert 'id="gate"' not in html and 'id="plots"' not in html
    assert "DataError: no items" in section(html, "failures") and "No metrics" in html
    assert "open with <code>mlflow ui --backend-store-uri sqlite:///m.db" in html
    assert offline(html)
    undecided = render_suite_report(suite_report(gate=None))
    assert "No decision" in section(undecided, "gate")


# ---- comparison report --------------------------------------------------------------------------


def per_sample(tmp_path: Path, n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Rows with images on disk (a few unreadable), a text the model produced, hits, sims."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = tmp_path / "images" / f"{i:03d}.png"
        if i % 7 == 3:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("not an image")
        elif not path.exists():
            draw(path, (20 * (i % 12), 90, 200 - 10 * (i % 12)))
        paths.append(str(path))
    return pd.DataFrame({
        "item_id": [f"item-{i}" for i in range(n)], "status": "scored",
        "image_path": paths, "label": rng.choice(["circle", HOSTILE], n),
        "top_caption": [f"caption {i}" for i in range(n)],
        "hit": (rng.random(n) < 0.5).astype(float), "sim": rng.normal(0.3, 0.05, n)})


def noise(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.02, n)


def run_data(name: str, table: pd.DataFrame, run_id: str) -> RunData:
    estimates = {"i2t_recall_at_1": mean("hit").to_json(), "clip_score": mean("sim").to_json()}
    report = {"task": "retrieval", "estimates": estimates, "row_key": "item_id",
              "headline": "i2t_recall_at_1", "higher_is_better": {"i2t_recall_at_1": True},
              "fingerprints": {"dataset": "d" * 64, "model": name}}
    return RunData(run_id, name, "0", report, table)


def changed_runs(tmp_path: Path) -> list[RunData]:
    base = per_sample(tmp_path)
    better = base.copy()
    better.loc[better["hit"] == 0, "hit"] = 1.0  # every miss becomes a hit
    better["sim"] += 0.05 + noise(len(better))
    better["top_caption"] = [f"better caption {i}" for i in range(len(better))]
    return [run_data(HOSTILE, base, "a" * 32), run_data("clip-long", better, "b" * 32)]


def comparison(runs: list[RunData], gate: bool = True) -> tuple[dict[str, Any], list[Any]]:
    pairs = [compare_runs(runs[0], run, SETTINGS, permutations=199) for run in runs[1:]]
    gates = ([check_rules(p, [GateRule(metric="i2t_recall_at_1", max_drop=0.01)], "a" * 32)
              .to_json() for p in pairs] if gate else None)
    return comparison_document(pairs, SETTINGS, 199, 0.05, gates), pairs


def test_comparison_report_shows_runs_deltas_forest_gate_and_changed_items(tmp_path: Path):
    runs = changed_runs(tmp_path)
    document, pairs = comparison(runs)
    media = comparison_media(runs, document)
    html = render_comparison_report(ComparisonReport(
        document, media, {"b" * 32: "https://mlflow.example/#/runs/b"}, "c" * 32, "today"))
    assert HOSTILE not in html and "&lt;script&gt;alert(&quot;x&quot;)" in html and offline(html)
    runs_part = section(html, "runs")
    assert "a" * 32 in runs_part and '<a href="https://mlflow.example/#/runs/b">' in runs_part
    pair = section(html, "pair-0")
    hit = pairs[0].metric("i2t_recall_at_1")
    assert hit is not None and hit.delta > 0
    assert f'data-metric="i2t_recall_at_1" data-value="{hit.delta!r}">{hit.delta:+.4f}' in pair
    assert f"[{hit.ci_low:+.4f}, {hit.ci_high:+.4f}]" in pair
    assert f"{hit.pvalue:.1e}" in pair or f"{hit.pvalue:.3f}" in pair
    assert 'class="badge verdict up"' in pair and "(mcnemar)" in pair
    assert pair.count("<svg ") == 1 and "Forest plot" in pair
    assert "Gate" in pair and 'class="badge passed"' in pair and "Promotion: none." in pair

    changed = document["comparisons"][0]["changed_rows"]
    assert changed["kind"] == "flips" and changed["gained_total"] > CHANGED_ROWS
    shown = [row["item_id"] for row in changed["gained"]][:CHANGED_ROWS]
    assert all(f"<code>{item}</code>" in pair for item in shown)
    assert pair.count('<img class="thumb"') + pair.count("thumb placeholder") == len(shown)
    assert pair.count('<img class="thumb" src="data:image/jpeg;base64,') >= 1
    unreadable = [i for i in shown if int(i.split("-")[1]) % 7 == 3]
    assert pair.count("thumb placeholder") == len(unreadable)
    assert "top_caption (A)" in pair and "better caption" in pair  # side by side
    assert f"(+{changed['gained_total'] - CHANGED_ROWS} more)" in pair
    assert "/images/" not in pair  # image paths are not shown


def test_thumbnails_are_downscaled_and_unreadable_files_give_none(tmp_path: Path):
    import base64
    import io

    from PIL import Image

    Image.new("RGB", (400, 300), "teal").save(tmp_path / "big.png")
    (tmp_path / "text.png").write_text("not an image")
    cache: dict[str, str] = {}
    uri = thumbnail(str(tmp_path / "big.png"), cache)
    assert uri.startswith("data:image/jpeg;base64,")
    size = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size
    assert max(size) == 120 and size == (120, 90)
    for bad in (tmp_path / "text.png", tmp_path / "missing.png", tmp_path, "s3://b/k.png", None):
        assert thumbnail(str(bad) if bad else bad, cache) == ""


def test_comparison_without_changes_or_gate_still_renders(tmp_path: Path):
    table = per_sample(tmp_path, n=12)
    runs = [run_data("same-a", table, "a" * 32), run_data("same-b", table.copy(), "b" * 32)]
    document, _ = comparison(runs, gate=False)
    html = render_comparison_report(ComparisonReport(document, comparison_media(runs, document)))
    pair = section(html, "pair-0")
    assert "<h3>Gate</h3>" not in pair and pair.count("<p>None.</p>") == 2
    assert 'class="badge verdict same"' in pair and "≈" in pair and "+0.0000" in pair
    assert "<img" not in html and offline(html)
    no_rows = document | {"comparisons": [document["comparisons"][0] | {
        "changed_rows": {"kind": "none", "reason": "ratio has no per-row values",
                         "gained": [], "lost": []}}]}
    assert "ratio has no per-row values" in render_comparison_report(ComparisonReport(no_rows))


# ---- end to end: a real suite and a real comparison, opened in Chromium --------------------------

SUITE_TESTS = importlib.import_module("tests.flows.test_suite")
second_clip_dir = SUITE_TESTS.second_clip_dir  # the module fixture: a differently seeded CLIP


@pytest.fixture(scope="module")
def suite_run(prefect_harness, tiny_clip_dir: Path, second_clip_dir: Path,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """seed0, seed1 and a broken model on 12 images; seed1 gated against the experiment's best
    run (it always passes: max_drop 1) and promoted. The suite fails (the broken model)."""
    from flows.suite import SuiteFailed, suite
    from tasks.suite import build_suite

    root = tmp_path_factory.mktemp("html-suite")
    gate = {"model": "seed1", "dataset": "twelve", "baseline": "experiment:suite-exp",
            "rules": [{"metric": "i2t_recall_at_1", "max_drop": 1.0}]}
    data = SUITE_TESTS.suite_data(
        root, {"seed0": str(tiny_clip_dir), "seed1": str(second_clip_dir),
               "broken": str(root / "no-such-model")},
        {"twelve": str(write_dataset(root / "d12", n=12))}, gate=gate,
        promote={"model_name": "html-e2e"})
    data["shared"]["report"]["formats"] = ["json", "parquet"]
    started = time.perf_counter()
    with pytest.raises(SuiteFailed) as failed:
        suite(build_suite(data))
    assert failed.value.result is not None
    return {"result": failed.value.result, "uri": f"sqlite:///{root / 'mlflow.db'}",
            "root": root, "seconds": time.perf_counter() - started}


def open_in_chromium(path: Path, shot: Path) -> dict[str, Any]:
    """Opens ``path`` from disk; returns what the page shows (DOM facts), the requests that
    left the file system, console errors, and saves a full-page screenshot to ``shot``."""
    with chromium_page(viewport={"width": 1280, "height": 900}) as page:
        requests, errors = record_requests(page), record_errors(page)
        page.goto(path.as_uri(), wait_until="load")
        facts = page.evaluate("""() => ({
            sections: [...document.querySelectorAll('section[id]')].map(s => s.id),
            images: [...document.images].map(i => i.naturalWidth),
            svgs: [...document.querySelectorAll('svg')].map(s => s.getBoundingClientRect().width),
            cells: [...document.querySelectorAll('td[data-metric]')].map(td => ({
                row: [...td.closest('tr').cells].map(c => c.textContent),
                metric: td.dataset.metric, text: td.textContent})),
            text: document.body.innerText})""")
        page.screenshot(path=str(shot), full_page=True)
    keep(shot)
    return facts | {"external": external_requests(requests), "errors": errors}


def keep(shot: Path) -> None:
    """Copies a screenshot to $BIFOCAL_ARTIFACTS when set (CI keeps them)."""
    folder = os.environ.get("BIFOCAL_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(folder) / shot.name)


def latest_artifact(key: str) -> str:
    """The newest Prefect artifact with ``key`` (its markdown)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1)
    return str(found[0].data)


def artifact(uri: str, run_id: str, path: str, folder: Path) -> Path:
    from mlflow import MlflowClient

    return Path(MlflowClient(tracking_uri=uri).download_artifacts(run_id, path, str(folder)))


@pytest.mark.e2e
def test_suite_report_of_a_real_suite_in_chromium(suite_run: dict[str, Any], tmp_path: Path):
    result = suite_run["result"]
    path = Path(result["report_html"])
    assert path.name == "suite_report.html" and path.parent.parent == suite_run["root"] / "reports"
    logged = artifact(suite_run["uri"], result["mlflow_run_id"], "suite_report.html", tmp_path)
    assert logged.read_bytes() == path.read_bytes()  # the MLflow run has the same page
    assert f"HTML report: {path}" in latest_artifact("bifocal-suite")

    facts = open_in_chromium(path, tmp_path / "suite_report.png")
    assert facts["external"] == [] and facts["errors"] == []
    assert facts["sections"] == ["grid", "leaderboard", "plots", "failures", "gate"]
    assert all(width > 0 for width in facts["images"] + facts["svgs"]) and facts["svgs"]
    rows = {(r["model"], r["status"]): r for r in result["leaderboard"]}
    value = rows[("seed0", "ok")]["i2t_recall_at_1"]
    (shown,) = [c["text"] for c in facts["cells"]
                if c["row"][1] == "seed0" and c["metric"] == "i2t_recall_at_1"]
    assert shown.startswith(f"{value:.4f}")
    text = facts["text"]
    assert "broken@twelve" in text and rows[("broken", "failed")]["error"][:40] in text
    assert "Gate passed" in text and "seed1@twelve vs experiment:suite-exp" in text
    assert "Promoted: html-e2e version 1 is now @champion" in text
    print(f"suite: {suite_run['seconds']:.1f} s, report {path.stat().st_size / 1024:.1f} KB")


@pytest.mark.e2e
def test_comparison_report_of_real_runs_in_chromium(suite_run: dict[str, Any], tmp_path: Path):
    from flows.compare import compare
    from tasks.config import StatisticsConfig

    rows = {r["model"]: r for r in suite_run["result"]["leaderboard"]}
    started = time.perf_counter()
    result = compare([rows["seed0"]["mlflow_run_id"], rows["seed1"]["mlflow_run_id"]],
                     tracking_uri=suite_run["uri"], statistics=StatisticsConfig(bootstrap=200),
                     permutations=999, gate=[GateRule(metric="i2t_recall_at_1", max_drop=1.0)])
    seconds = time.perf_counter() - started
    assert result["report_html"].endswith("/comparison/comparison.html")
    assert f"report: {result['report_html']}" in result["text"]
    assert f"HTML report: {result['report_html']}" in latest_artifact(
        "bifocal-comparison-summary")
    path = artifact(suite_run["uri"], result["mlflow_run_id"], "comparison/comparison.html",
                    tmp_path)

    facts = open_in_chromium(path, tmp_path / "comparison.png")
    assert facts["external"] == [] and facts["errors"] == []
    assert facts["sections"] == ["runs", "pair-0"]
    assert all(width > 0 for width in facts["images"] + facts["svgs"]) and facts["svgs"]
    (pair,) = result["comparisons"]
    shown = {c["metric"]: c["text"] for c in facts["cells"]}  # one candidate: one row each
    assert set(shown) == {m["metric"] for m in pair["metrics"]}
    for metric in pair["metrics"]:
        if metric["delta"] is not None:
            assert shown[metric["metric"]].startswith(f"{metric['delta']:+.4f}")
    changed = pair["changed_rows"]
    listed = len(changed["gained"][:CHANGED_ROWS]) + len(changed["lost"][:CHANGED_ROWS])
    assert len(facts["images"]) == listed  # every changed item's image could be read
    text = facts["text"]
    assert "Gate passed" in text and "Items that changed most" in text
    assert rows["seed0"]["run_name"] in text and rows["seed1"]["mlflow_run_id"] in text
    print(f"comparison: {seconds:.1f} s, {listed} changed items shown, report "
          f"{path.stat().st_size / 1024:.1f} KB")
