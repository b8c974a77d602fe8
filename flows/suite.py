"""The suite flow: every model x dataset of a ``SuiteConfig`` as an evaluate subflow whose MLflow
run is nested under the suite's run, then a leaderboard on that run and in Prefect."""

from __future__ import annotations

import time
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
    leaderboard_markdown,
    leaderboard_records,
    metric_directions,
    split_label,
    suite_params,
)
from tasks.tracking import mlflow_log as ml
from tasks.tracking.fingerprint import git_commit


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


def publish(config: SuiteConfig, outcomes: list[Outcome], uri: str, parent: str
            ) -> dict[str, Any]:
    """Leaderboard onto the suite's MLflow run (table + counts) and into Prefect artifacts."""
    frame = build_leaderboard(outcomes, metric_directions([o.result for o in outcomes]))
    ml.log_table(uri, parent, frame, "leaderboard.json")
    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("ok", "failed", "skipped")}
    ml.log_metrics(uri, parent, {"evaluations": len(outcomes), "evaluations_ok": counts["ok"],
                                 "evaluations_failed": counts["failed"],
                                 "evaluations_skipped": counts["skipped"]})
    create_table_artifact(display_rows(frame), key="bifocal-leaderboard",
                          description=f"Suite {config.name}: leaderboard (* = best per dataset)")
    create_markdown_artifact(leaderboard_markdown(frame, config.name, ml.run_link(uri, parent)),
                             key="bifocal-suite", description=f"Suite {config.name}")
    failures = [{"label": o.label, "model": split_label(o.label)[0],
                 "dataset": split_label(o.label)[1], "error": o.error,
                 "mlflow_run_id": o.mlflow_run_id} for o in outcomes if o.status == "failed"]
    return {"name": config.name, "mlflow_run_id": parent, "tracking_uri": redact_url(uri),
            "leaderboard": leaderboard_records(frame),
            "higher_is_better": frame.attrs["higher_is_better"], "failures": failures,
            "skipped": [o.label for o in outcomes if o.status == "skipped"]}


@flow(name="suite", log_prints=True)
def suite(config: SuiteConfig) -> dict[str, Any]:
    """Evaluate every model on every dataset as nested MLflow runs and build a leaderboard; the
    flow fails (after all evaluations ran) when any evaluation failed."""
    pairs = check_suite(config)  # every problem of every evaluation, before anything runs
    first = pairs[0][1]
    uri = ml.tracking_uri(first.tracking.tracking_uri)
    parent = ml.start_run(uri, first.tracking.experiment, config.name, suite_tags(config, first))
    started = time.perf_counter()
    try:
        ml.log_params(uri, parent, suite_params(config, pairs))
        result = publish(config, run_evaluations(config, pairs, uri, parent), uri, parent)
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
