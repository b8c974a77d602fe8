"""End to end: an evaluation writes its review queue, reviewers fill it in, ``bifocal review
ingest`` records the human metrics and the agreement on MLflow; the figures are checked against
scipy, scikit-learn and the krippendorff package on the same ratings."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tasks.config_io import build_config
from tests.helpers import write_dataset
from tests.review_reference import assert_matches, expected_agreement, scripted_ratings

pytestmark = pytest.mark.e2e

REVIEW = {"size": 16, "seed": 2, "strategies": [
    {"name": "worst", "share": 0.25}, {"name": "stratified", "column": "size", "share": 0.25},
    {"name": "margin", "share": 0.25}, {"name": "random", "share": 0.25}]}


def run_cli(*args: str) -> tuple[int, str, str]:
    from flows.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def evaluated(prefect_harness, tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from flows.evaluate import evaluate

    tmp = tmp_path_factory.mktemp("review-e2e")
    config = build_config({
        "model": {"path": str(tiny_clip_dir), "batch_size": 8},
        "dataset": {"path": str(write_dataset(tmp / "ds", n=40))},
        "review": REVIEW, "slices": {"columns": ["size"], "min_size": 2},
        "statistics": {"bootstrap": 200},
        "report": {"destination": str(tmp / "reports")},
        "tracking": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "review"},
        "work_dir": str(tmp / "work")})
    return evaluate(config), config, tmp


def test_queue_files_strategies_and_manifest(evaluated):
    result, config, _ = evaluated
    folder = Path(result["report"]) / "review"
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"queue.csv", "queue.jsonl", "sample.parquet", "review.json", "review_sheet.html",
            "label_studio/config.xml", "label_studio/tasks.json"} <= names
    queue = pd.read_csv(folder / "queue.csv")
    assert len(queue) == 16 and queue["review_id"].is_unique
    assert set(queue["review_strategy"]) == {"worst", "stratified", "margin", "random"}
    assert {"relevance", "verdict", "comment", "reviewer", "score_i2t_rank"} <= set(queue.columns)
    manifest = json.loads((folder / "review.json").read_text())
    assert manifest["run_id"] == result["mlflow_run_id"] and manifest["slices"] == ["size"]
    tasks = json.loads((folder / "label_studio" / "tasks.json").read_text())
    assert len(tasks) == 16 and {t["data"]["review_id"] for t in tasks} == set(queue["review_id"])


def test_ingest_records_human_metrics_and_agreement_matching_the_references(evaluated):
    result, config, tmp = evaluated
    run_id, uri = result["mlflow_run_id"], config.tracking.tracking_uri
    queue = pd.read_csv(Path(result["report"]) / "review" / "queue.csv")
    ann = scripted_ratings(queue, seed=1).assign(reviewer="ann")
    ann.to_csv(tmp / "ann.csv", index=False)
    bob = scripted_ratings(queue.head(10), seed=7).drop(columns=["reviewer"])
    with (tmp / "bob.jsonl").open("w") as handle:  # the JSONL queue, filled in, no reviewer
        for row in bob.to_dict(orient="records"):
            handle.write(json.dumps(row) + "\n")

    code, out, err = run_cli("review", "ingest", run_id, str(tmp / "ann.csv"),
                             str(tmp / "bob.jsonl"), "--tracking-uri", uri)
    assert code == 0, err
    assert "reviewed items: 16, ratings: 26, reviewers: 2" in out

    client = MlflowClient(tracking_uri=uri)
    child = client.search_runs([client.get_run(run_id).info.experiment_id],
                               f"tags.bifocal.review_of = '{run_id}'")
    assert [r.info.run_name for r in child] == ["review-1"]
    assert child[0].data.tags["mlflow.parentRunId"] == run_id
    metrics = child[0].data.metrics

    both = pd.concat([ann.assign(reviewer="ann"), bob.assign(reviewer="bob")])
    rank = queue.set_index("review_id")["score_i2t_rank"]
    expected = expected_agreement(both, rank, "i2t_rank", higher_is_better=False)
    assert_matches(metrics, expected)
    assert metrics["interrater_items.relevance"] == 10
    for key in ("human_relevance_mean", "spearman.i2t_rank.relevance", "alpha.relevance"):
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"]
    assert any(k.startswith("human_relevance_mean.strategy.margin") for k in metrics)
    assert any(k.startswith("human_relevance_mean.slice.size.") for k in metrics)

    for plotted in (child[0].info.run_id, run_id):  # the human-vs-metric scatter
        assert "plots/review_human_vs_metric.png" in {
            a.path for a in client.list_artifacts(plotted, "plots")}
    stored = client.download_artifacts(run_id, "review/ratings.parquet", str(tmp / "dl"))
    assert len(pd.read_parquet(stored)) == 26


def test_a_bad_file_stores_nothing_and_names_file_and_line(evaluated):
    result, config, tmp = evaluated
    run_id, uri = result["mlflow_run_id"], config.tracking.tracking_uri
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_run(run_id).info.experiment_id
    before = len(client.search_runs([experiment], f"tags.bifocal.review_of = '{run_id}'"))
    (tmp / "good.csv").write_text("review_id,reviewer,relevance\n"
                                  + pd.read_csv(Path(result["report"]) / "review" / "queue.csv")
                                  ["review_id"].iloc[0] + ",carl,3\n")
    (tmp / "bad.csv").write_text("review_id,reviewer,relevance\nnot-an-item,carl,3\n")
    code, _, err = run_cli("review", "ingest", run_id, str(tmp / "good.csv"),
                           str(tmp / "bad.csv"), "--tracking-uri", uri)
    assert code == 2
    assert "bad.csv: line 2: review_id 'not-an-item' is not in the run's review queue" in err
    after = client.search_runs([experiment], f"tags.bifocal.review_of = '{run_id}'")
    assert len(after) == before
    code, _, err = run_cli("review", "ingest", "0" * 32, str(tmp / "good.csv"),
                           "--tracking-uri", uri)
    assert code == 2 and "not found" in err


def test_the_sheet_clicked_in_chromium_is_ingested_as_a_further_round(evaluated):
    from tests.browser import chromium_page

    result, config, tmp = evaluated
    run_id, uri = result["mlflow_run_id"], config.tracking.tracking_uri
    sheet = Path(result["report"]) / "review" / "review_sheet.html"
    queue = pd.read_csv(Path(result["report"]) / "review" / "queue.csv")
    with chromium_page(tmp / "downloads") as page:
        page.goto(sheet.as_uri())
        page.fill("#reviewer", "dora")
        for item in range(5):
            page.click(f'label[for="a{item}-relevance-{item + 1}"]')
            page.click(f'label[for="a{item}-verdict-{"correct" if item % 2 else "incorrect"}"]')
        with page.expect_download() as info:
            page.click("#save")
        saved = tmp / info.value.suggested_filename
        info.value.save_as(saved)
    code, out, err = run_cli("review", "ingest", run_id, str(saved), "--tracking-uri", uri)
    assert code == 0, err
    client = MlflowClient(tracking_uri=uri)
    rounds = client.search_runs([client.get_run(run_id).info.experiment_id],
                                f"tags.bifocal.review_of = '{run_id}'",
                                order_by=["attributes.start_time DESC"])
    latest = rounds[0]
    assert latest.info.run_name == f"review-{len(rounds)}"
    stored = pd.read_parquet(client.download_artifacts(run_id, "review/ratings.parquet",
                                                       str(tmp / "dl-sheet")))
    dora = stored[stored["reviewer"] == "dora"].set_index("review_id")
    assert dora.loc[queue["review_id"].head(5), "relevance"].tolist() == [1, 2, 3, 4, 5]
    assert latest.data.metrics["review_raters"] == 3
    assert latest.data.metrics["review_ratings"] == len(stored)
