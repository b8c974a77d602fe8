"""The compare flow: two or more evaluation runs, paired significance per metric, an optional
regression gate; the comparison is logged as its own MLflow run beside the first run."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.comparison import (
    DEFAULT_ALPHA,
    DEFAULT_PERMUTATIONS,
    KIND_TAG,
    PairComparison,
    RunData,
    compare_runs,
    comparison_document,
    comparison_metrics,
    load_run,
    log_metric_steps,
    render_markdown,
    render_text,
    resolve_runs,
    table_rows,
)
from tasks.comparison.html import (
    FILENAME,
    ComparisonReport,
    comparison_media,
    render_comparison_report,
)
from tasks.config import GateRule, StatisticsConfig
from tasks.gate import GATE_TAG, GateFailed, GateResult, check_rules, text_lines
from tasks.secrets import redact_text, redact_url
from tasks.stats.bootstrap import BootstrapSettings
from tasks.tracking import mlflow_log as ml
from tasks.tracking.run import flow_run_ids


def comparison_tags(runs: list[RunData], gates: list[GateResult] | None) -> dict[str, str]:
    tags = {KIND_TAG: "comparison", "bifocal.baseline_run": runs[0].run_id,
            "bifocal.compared_runs": ",".join(run.run_id for run in runs),
            "bifocal.task": runs[0].task}
    if gates is not None:
        tags[GATE_TAG] = "passed" if all(g.passed for g in gates) else "failed"
    return tags | {f"prefect.flow_run_{k}": v for k, v in flow_run_ids().items()}


def log_comparison(uri: str, runs: list[RunData], pairs: list[PairComparison],
                   document: dict[str, Any], markdown: str,
                   gates: list[GateResult] | None,
                   html: Callable[[str], str] | None = None) -> str:
    """One MLflow run in the baseline's experiment: tags, metrics, comparison.json/.md and
    comparison.html (``html(run_id)``: the page, given the comparison's run id)."""
    client = ml.client(uri)
    names = " vs ".join(run.run_name for run in runs[1:])
    run = client.create_run(runs[0].experiment_id, run_name=f"compare {runs[0].run_name} -> "
                            f"{names}"[:250], tags=comparison_tags(runs, gates))
    run_id = run.info.run_id
    try:
        log_metric_steps(uri, run_id, comparison_metrics(pairs))
        with tempfile.TemporaryDirectory(prefix="bifocal-comparison-") as folder:
            (Path(folder) / "comparison.json").write_text(json.dumps(document, indent=2))
            (Path(folder) / "comparison.md").write_text(markdown)
            if html is not None:
                (Path(folder) / FILENAME).write_text(html(run_id), encoding="utf-8")
            ml.log_artifacts(uri, run_id, Path(folder), artifact_path="comparison")
    except BaseException as error:  # never leave the run RUNNING
        message = redact_text(f"{type(error).__name__}: {error}")
        ml.set_tags(uri, run_id, {"bifocal.error": message[:5000]})
        ml.end_run(uri, run_id, "FAILED")
        raise
    ml.end_run(uri, run_id, "FINISHED")
    return run_id


def run_links(uri: str, runs: list[RunData]) -> dict[str, str]:
    """UI addresses of the compared runs on an http(s) tracking server (none otherwise)."""
    if not uri.startswith(("http://", "https://")):
        return {}
    return {run.run_id: ml.run_link(uri, run.run_id, run.experiment_id) for run in runs}


def html_page(uri: str, runs: list[RunData], document: dict[str, Any]) -> Callable[[str], str]:
    """comparison.html for the comparison's run id: thumbnails and texts of the changed rows
    are read now, from the runs' per-sample tables."""
    media = comparison_media(runs, document)
    links = run_links(uri, runs)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    def render(run_id: str) -> str:
        own = {run_id: ml.run_link(uri, run_id, runs[0].experiment_id)} if links else {}
        return render_comparison_report(ComparisonReport(document, media, links | own, run_id,
                                                         date))

    return render


def report_location(uri: str, run_id: str) -> str:
    """Where comparison.html lies: the run's artifact location (without credentials)."""
    try:
        root = ml.client(uri).get_run(run_id).info.artifact_uri
    except Exception:  # unreachable tracking server (a spooled run): the artifact path
        return f"comparison/{FILENAME}"
    return f"{redact_url(str(root).rstrip('/')) or root}/comparison/{FILENAME}"


@flow(name="compare", log_prints=True)
def compare(runs: list[str], filter_string: str | None = None,
            tracking_uri: str | None = None, statistics: StatisticsConfig | None = None,
            permutations: int = DEFAULT_PERMUTATIONS, alpha: float = DEFAULT_ALPHA,
            force: bool = False, gate: list[GateRule] | None = None,
            fail_on_gate: bool = True) -> dict[str, Any]:
    """Compare run A (the first; a run id, experiment:NAME or models:/NAME@ALIAS) with each
    other run: delta B - A with a paired bootstrap CI, permutation or McNemar p-values (Holm
    across metrics), effect sizes and the rows that changed most. Runs on different datasets
    are refused unless ``force`` (then the rows both scored are compared). With ``gate`` rules
    the flow fails (GateFailed) when a rule fails, unless ``fail_on_gate`` is off."""
    logger = get_run_logger()
    started = time.perf_counter()
    uri = ml.tracking_uri(tracking_uri)
    stats = statistics or StatisticsConfig()
    settings = BootstrapSettings(stats.bootstrap, stats.level, stats.method, stats.seed)
    ids = resolve_runs(uri, runs, filter_string)
    if len(ids) < 2:
        raise ValueError(f"a comparison needs at least two runs; {runs} selected {len(ids)}")
    loaded = [load_run(uri, run_id) for run_id in ids]
    logger.info("comparing %s with %d run(s)", ids[0], len(ids) - 1)
    pairs = [compare_runs(loaded[0], other, settings, permutations, force, alpha)
             for other in loaded[1:]]
    gates = ([check_rules(pair, gate, pair.baseline["run_id"], stats.level) for pair in pairs]
             if gate else None)
    document = comparison_document(pairs, settings, permutations, alpha,
                                   [g.to_json() for g in gates] if gates is not None else None)
    markdown = render_markdown(document, pairs)
    text = render_text(document, pairs)
    if gates is not None:
        gate_text = "\n".join(line for g in gates for line in text_lines(g))
        markdown += "\n## Gate\n\n```\n" + gate_text + "\n```\n"
        text += "\n" + gate_text + "\n"
    run_id = log_comparison(uri, loaded, pairs, document, markdown, gates,
                            html_page(uri, loaded, document))
    report = report_location(uri, run_id)
    create_table_artifact(table_rows(pairs), key="bifocal-comparison",
                          description=f"Paired comparison against {loaded[0].run_name}")
    create_markdown_artifact(markdown + f"\n\nMLflow run `{run_id}`: {ml.run_link(uri, run_id)}"
                             f"\n\nHTML report: {report} (`comparison/{FILENAME}` on the run)",
                             key="bifocal-comparison-summary", description="Paired comparison")
    logger.info("comparison run %s (%.1f s)", run_id, time.perf_counter() - started)
    text += f"report: {report}\n"
    result = document | {"mlflow_run_id": run_id, "tracking_uri": redact_url(uri), "text": text,
                         "report_html": report}
    if gates is not None and fail_on_gate:
        failed = [g for g in gates if not g.passed]
        if failed:
            raise GateFailed("; ".join(g.message() for g in failed), result)
    return result
