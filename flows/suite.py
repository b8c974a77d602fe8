"""The suite flow: every model x dataset of a ``SuiteConfig`` as an evaluate subflow whose MLflow
run is nested under the suite's run, then a leaderboard on that run and in Prefect."""

from __future__ import annotations

import json
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.evaluate import evaluate, flow_run_ids
from tasks.config import EvalConfig
from tasks.secrets import redact_text, redact_url
from tasks.suite import (
    Outcome,
    SuiteConfig,
    build_leaderboard,
    check_suite,
    display_rows,
    label_of,
    leaderboard_markdown,
    leaderboard_records,
    metric_directions,
    split_label,
    suite_params,
)
from tasks.suite.html import FILENAME, SuiteReport, write_suite_report
from tasks.tracking import mlflow_log as ml
from tasks.tracking.fingerprint import git_commit
from tasks.tracking.storage import presigned_links, publish_folder


class SuiteFailed(RuntimeError):
    """Some evaluations of a suite failed; ``result`` is what the flow would have returned."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


def suite_tags(config: SuiteConfig, first: EvalConfig) -> dict[str, str]:
    tags = {"bifocal.suite": config.name, "bifocal.task": first.task.value}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags | {f"prefect.flow_run_{k}": v for k, v in flow_run_ids().items()}


def _new_child_run(uri: str, parent: str, known: set[str]) -> str | None:
    """The run a failed evaluation started (if any): the suite's one unaccounted child run."""
    try:
        client = ml.client(uri)
        experiment = client.get_run(parent).info.experiment_id
        runs = client.search_runs([experiment],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    except Exception:  # best effort: the failure itself is what gets reported
        return None
    new = [run.info.run_id for run in runs if run.info.run_id not in known]
    return new[0] if len(new) == 1 else None


def run_evaluations(config: SuiteConfig, pairs: list[tuple[str, EvalConfig]], uri: str,
                    parent: str) -> list[Outcome]:
    """Each pair as a nested evaluate subflow; a failure is recorded and the rest still run
    (unless ``fail_fast``)."""
    logger = get_run_logger()
    outcomes: list[Outcome] = []
    known: set[str] = set()
    stopped_after = ""
    for label, eval_config in pairs:
        if stopped_after:
            outcomes.append(Outcome(label, "skipped", error=f"not run: fail_fast stopped the "
                                    f"suite after {stopped_after} failed"))
            continue
        tracking = eval_config.tracking.model_copy(update={"parent_run_id": parent})
        child = eval_config.model_copy(update={"tracking": tracking})
        try:
            result = evaluate.with_options(flow_run_name=label)(child)
        except Exception as error:
            message = redact_text(f"{type(error).__name__}: {error}")  # may quote a URI
            run_id = _new_child_run(uri, parent, known)
            known |= {run_id} if run_id else set()
            logger.error("evaluation %s failed: %s", label, message)
            outcomes.append(Outcome(label, "failed", error=message, mlflow_run_id=run_id))
            if config.fail_fast:
                stopped_after = label
            continue
        known.add(result["mlflow_run_id"])
        outcomes.append(Outcome(label, "ok", result=result))
    return outcomes


def gate_decision(config: SuiteConfig, outcomes: list[Outcome], uri: str
                  ) -> dict[str, Any] | None:
    """The gated evaluation's decision: from its result, else (a failed gate fails the
    evaluation) the gate.json it recorded on its run; None when it never reached the gate."""
    if config.gate is None:
        return None
    label = label_of(config.gate.model, config.gate.dataset)
    outcome = next((o for o in outcomes if o.label == label), None)
    if outcome is None:
        return None
    if isinstance((outcome.result or {}).get("gate"), dict):
        return dict((outcome.result or {})["gate"])
    return _recorded_gate(uri, outcome.mlflow_run_id) if outcome.mlflow_run_id else None


def _recorded_gate(uri: str, run_id: str) -> dict[str, Any] | None:
    try:
        with tempfile.TemporaryDirectory(prefix="bifocal-gate-") as folder:
            path = ml.client(uri).download_artifacts(run_id, "gate.json", folder)
            found = json.loads(Path(path).read_text())
    except Exception:  # no gate.json: the evaluation failed before its gate
        return None
    return found if isinstance(found, dict) else None


def _run_links(uri: str, parent: str, run_ids: list[str]) -> dict[str, str]:
    """UI addresses of the suite's runs when the tracking store is an http(s) server."""
    if not uri.startswith(("http://", "https://")):
        return {}
    try:
        experiment: str | None = ml.client(uri).get_run(parent).info.experiment_id
    except Exception:  # unreachable: run_link falls back to the direct run address
        experiment = None
    return {run_id: ml.run_link(uri, run_id, experiment)
            for run_id in [parent, *run_ids] if run_id}


def suite_report(config: SuiteConfig, first: EvalConfig, outcomes: list[Outcome],
                 result: dict[str, Any], uri: str, started: datetime) -> SuiteReport:
    """What suite_report.html shows, from the flow's result and the suite's settings
    (``first``: the first evaluation, whose task and statistics every evaluation shares)."""
    from tasks.kinds import get_task_kind

    gate, promote, run_id = config.gate, config.promote, result["mlflow_run_id"]
    ids = [str(r.get("mlflow_run_id") or "") for r in result["leaderboard"]]
    return SuiteReport(
        name=result["name"], date=started.strftime("%Y-%m-%d %H:%M UTC"), run_id=run_id,
        run_link=ml.run_link(uri, run_id), tracking_uri=result["tracking_uri"],
        leaderboard=result["leaderboard"], higher_is_better=result["higher_is_better"],
        models=[m.name for m in config.models], datasets=[d.name for d in config.datasets],
        headline=get_task_kind(first.task.value).headline, level=first.statistics.level,
        gate_setup=f"{label_of(gate.model, gate.dataset)} vs {gate.baseline}" if gate else None,
        promote_setup=f"{promote.model_name}@{promote.alias}" if promote else None,
        gate=gate_decision(config, outcomes, uri), run_links=_run_links(uri, run_id, ids))


def publish_report(report: SuiteReport, first: EvalConfig, uri: str, parent: str
                   ) -> tuple[str, str]:
    """suite_report.html onto the suite's MLflow run and next to the evaluations' reports
    (``report.destination/<suite>-<run id[:8]>/``): where it lies, and a link to it (a
    presigned URL on S3, else the same path)."""
    with tempfile.TemporaryDirectory(prefix="bifocal-suite-") as folder:
        write_suite_report(report, Path(folder))
        ml.log_artifacts(uri, parent, Path(folder))
        name = re.sub(r"[^\w.\-@]+", "_", report.name) + "-" + parent[:8]
        published = publish_folder(Path(folder),
                                   f"{first.report.destination.rstrip('/')}/{name}")
    path = f"{published.rstrip('/')}/{FILENAME}"
    links = presigned_links(published, [FILENAME], first.report.presign_expiry_s)
    return path, links.get(FILENAME, path)


def suite_result(config: SuiteConfig, outcomes: list[Outcome], frame: Any, uri: str,
                 parent: str) -> dict[str, Any]:
    """What the flow returns (and the CLI prints)."""
    failures = [{"label": o.label, "model": split_label(o.label)[0],
                 "dataset": split_label(o.label)[1], "error": o.error,
                 "mlflow_run_id": o.mlflow_run_id} for o in outcomes if o.status == "failed"]
    return {"name": config.name, "mlflow_run_id": parent, "tracking_uri": redact_url(uri),
            "leaderboard": leaderboard_records(frame),
            "higher_is_better": frame.attrs["higher_is_better"], "failures": failures,
            "skipped": [o.label for o in outcomes if o.status == "skipped"]}


def publish(config: SuiteConfig, outcomes: list[Outcome], uri: str, parent: str,
            first: EvalConfig, started: datetime) -> dict[str, Any]:
    """Leaderboard onto the suite's MLflow run (table, counts, suite_report.html), the report
    next to the evaluations' reports, and both into Prefect artifacts."""
    frame = build_leaderboard(outcomes, metric_directions([o.result for o in outcomes]))
    ml.log_table(uri, parent, frame, "leaderboard.json")
    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("ok", "failed", "skipped")}
    ml.log_metrics(uri, parent, {"evaluations": len(outcomes), "evaluations_ok": counts["ok"],
                                 "evaluations_failed": counts["failed"],
                                 "evaluations_skipped": counts["skipped"]})
    result = suite_result(config, outcomes, frame, uri, parent)
    report = suite_report(config, first, outcomes, result, uri, started)
    result["report_html"], address = publish_report(report, first, uri, parent)
    create_table_artifact(display_rows(frame), key="bifocal-leaderboard",
                          description=f"Suite {config.name}: leaderboard (* = best per dataset)")
    markdown = leaderboard_markdown(frame, config.name, ml.run_link(uri, parent))
    shown = f"[{FILENAME}]({address})" if address != result["report_html"] else address
    create_markdown_artifact(f"{markdown}\n\nHTML report: {shown} (also `{FILENAME}` on the "
                             "MLflow run)", key="bifocal-suite",
                             description=f"Suite {config.name}")
    return result


@flow(name="suite", log_prints=True)
def suite(config: SuiteConfig) -> dict[str, Any]:
    """Evaluate every model on every dataset as nested MLflow runs and build a leaderboard; the
    flow fails (after all evaluations ran) when any evaluation failed."""
    pairs = check_suite(config)  # every problem of every evaluation, before anything runs
    first = pairs[0][1]
    uri = ml.tracking_uri(first.tracking.tracking_uri)
    parent = ml.start_run(uri, first.tracking.experiment, config.name, suite_tags(config, first))
    started, date = time.perf_counter(), datetime.now(UTC)
    try:
        ml.log_params(uri, parent, suite_params(config, pairs))
        outcomes = run_evaluations(config, pairs, uri, parent)
        result = publish(config, outcomes, uri, parent, first, date)
    except BaseException as error:  # never leave the suite's run RUNNING
        message = redact_text(f"{type(error).__name__}: {error}")
        ml.set_tags(uri, parent, {"bifocal.error": message[:5000]})
        ml.end_run(uri, parent, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    ml.log_metrics(uri, parent, {"wall_time_s": time.perf_counter() - started})
    failed = [f["label"] for f in result["failures"]]
    if failed:
        ml.set_tags(uri, parent, {"bifocal.error": f"failed evaluations: {', '.join(failed)}"})
    ml.end_run(uri, parent, "FAILED" if failed else "FINISHED")
    if failed:
        details = "; ".join(f"{f['label']}: {f['error']}" for f in result["failures"])
        raise SuiteFailed(f"{len(failed)} of {len(pairs)} evaluations failed: {details}"[:5000],
                          result)
    return result
