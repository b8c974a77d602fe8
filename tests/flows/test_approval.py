"""The approval pause: the evaluate flow waits after its report until a reviewer resumes it
through Prefect's API (what the UI's "Resume" form calls) with approve or reject; no answer in
time counts as a rejection."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tasks.config_io import build_config
from tests.helpers import write_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def base(tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("approval")
    return {"model": {"path": str(tiny_clip_dir), "batch_size": 8},
            "dataset": {"path": str(write_dataset(tmp / "ds", n=8))},
            "review": {"size": 4, "approval": True, "approval_timeout_s": 60},
            "statistics": {"bootstrap": 0},
            "report": {"destination": str(tmp / "reports")},
            "tracking": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
                         "experiment": "approval"},
            "work_dir": str(tmp / "work")}


def start(config) -> tuple[threading.Thread, dict[str, Any]]:
    from flows.evaluate import evaluate

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = evaluate(config)
        except BaseException as error:  # the test thread reads it
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def paused_flow_run(name_started_after: float, timeout: float = 240):
    """The evaluate flow run that is paused and waits for input."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                name=FlowRunFilterStateName(any_=["Paused"]))))
            fresh = [r for r in runs if r.created and r.created.timestamp() >= name_started_after
                     and r.state and r.state.state_details.run_input_keyset]
            if fresh:
                return fresh[0]
            time.sleep(1)
    raise AssertionError("the evaluate flow never paused for input")


def decide(decision: str, comment: str) -> None:
    from prefect.flow_runs import resume_flow_run

    run = paused_flow_run(time.time() - 600)
    resume_flow_run(run.id, run_input={"decision": decision, "comment": comment,
                                       "reviewer": "ann@example.org"})


def mlflow_run(config, outcome: dict[str, Any]):
    client = MlflowClient(tracking_uri=config.tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("approval").experiment_id],
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0]


def test_approve_finishes_the_run_with_the_decision_as_tags(prefect_harness, base):
    config = build_config(base)
    thread, outcome = start(config)
    decide("approve", "recalls look right")
    thread.join(timeout=240)
    assert "error" not in outcome, outcome.get("error")
    run = mlflow_run(config, outcome)
    assert run.info.run_id == outcome["result"]["mlflow_run_id"]
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["bifocal.approval"] == "approved"
    assert tags["bifocal.approval.by"] == "ann@example.org"
    assert tags["bifocal.approval.comment"] == "recalls look right"
    assert tags["bifocal.approval.at"].startswith("20")


def test_reject_fails_the_flow_and_the_run_with_the_comment(prefect_harness, base):
    from tasks.review.approval import ApprovalRejected

    config = build_config(base)
    thread, outcome = start(config)
    decide("reject", "captions leak the labels")
    thread.join(timeout=240)
    assert isinstance(outcome.get("error"), ApprovalRejected)
    assert "captions leak the labels" in str(outcome["error"])
    run = mlflow_run(config, outcome)
    assert run.info.status == "FAILED"
    assert run.data.tags["bifocal.approval"] == "rejected"
    assert "captions leak the labels" in run.data.tags["bifocal.error"]


def test_no_decision_in_time_counts_as_rejected(prefect_harness, base):
    from tasks.review.approval import ApprovalRejected

    config = build_config(base | {"review": base["review"] | {"approval_timeout_s": 3}})
    thread, outcome = start(config)
    thread.join(timeout=240)
    assert isinstance(outcome.get("error"), ApprovalRejected)
    run = mlflow_run(config, outcome)
    assert run.info.status == "FAILED"
    assert run.data.tags["bifocal.approval"] == "timed_out"
