"""MLflow 3.17's web UI in headless Chromium: the addresses Bifocal gives open the runs table,
and a task's saved view shows that task's runs with its metrics as columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.tracking import mlflow_log as ml
from tasks.tracking import ui
from tests.browser import chromium_page
from tests.services import mlflow_server

pytestmark = pytest.mark.e2e
WIDE = {"width": 2600, "height": 900}  # the runs table renders only the columns in sight


def make_runs(uri: str) -> str:
    """A retrieval and a zero-shot run in one experiment; the retrieval view saved."""
    for task, metrics in (("retrieval", {"i2t_recall_at_1": 0.258, "t2i_recall_at_1": 0.31,
                                         "hidden_metric": 1.0}),
                          ("zero_shot_classification", {"accuracy": 0.222})):
        run_id = ml.start_run(uri, "ui", f"{task}-run", {"bifocal.task": task})
        ml.log_metrics(uri, run_id, metrics)
        ml.end_run(uri, run_id)
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("ui").experiment_id
    ui.set_task_view(client, experiment_id, "retrieval", "i2t_recall_at_1",
                     ["t2i_recall_at_1", "i2t_recall_at_1"])
    return experiment_id


def open_page(page, url: str, shown: tuple[str, ...], screenshot: Path) -> str:
    """The page's text once every one of ``shown`` is on it (the table fills in after the
    header and the column picker, so waiting for one text alone can read a half-built page)."""
    page.goto(url)
    for text in shown:
        page.get_by_text(text).first.wait_for(timeout=60_000)
    page.screenshot(path=str(screenshot))
    return page.inner_text("body")


def test_runs_table_and_task_view_in_mlflows_ui(tmp_path):
    with mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"),
                       tmp_path) as uri:
        experiment_id = make_runs(uri)
        with chromium_page(tmp_path / "downloads", viewport=WIDE) as page:
            runs = open_page(page, ui.runs_url(uri, experiment_id),
                             ("retrieval-run", "zero_shot_classification-run"),
                             tmp_path / "runs.png")
            assert "/runs?" in page.url and "retrieval-run" in runs
            assert "i2t_recall_at_1" not in runs  # MLflow shows no metric column by itself
            view = open_page(page, ui.runs_url(uri, experiment_id, "bifocal-retrieval"),
                             ("Bifocal: retrieval", "retrieval-run", "i2t_recall_at_1"),
                             tmp_path / "view.png")
    assert "Bifocal: retrieval" in view and "retrieval-run" in view
    assert "zero_shot_classification-run" not in view  # like with like
    assert view.index("i2t_recall_at_1") < view.index("t2i_recall_at_1")  # headline first
    assert "0.258" in view and "hidden_metric" not in view
