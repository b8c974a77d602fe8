"""The ``bifocal`` command line: run an evaluation, run the demo, score precomputed outputs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flows.serve_cli import add_serve_parser
from flows.services_cli import add_services_parser
from flows.settings import apply_defaults

if TYPE_CHECKING:
    from tasks.scoring_io import ScoringInputs


def _print_summary(result: dict) -> None:
    from tasks.report.summary import metric_rows

    rows = metric_rows(result["metrics"])
    width = max((len(k) for k, _ in rows), default=10)
    print(f"\n{result['run_name']}")
    for key, text in rows:
        print(f"  {key:<{width}}  {text}")
    counts = ", ".join(f"{k}={v}" for k, v in result["counts"].items())
    print(f"  counts: {counts}")
    for warning in result.get("warnings", []):
        print(f"  warning: {warning}")
    print(f"  inference cache: {result['inference_cache']}")
    print(f"  MLflow run: {result['mlflow_run_id']} ({result['tracking_uri']})")
    if result.get("gate"):
        print(f"  {result['gate']['message']}")
        for line in _promoted(result["gate"]):
            print(f"  {line}")
    print(f"  report: {result['report']}")
    review = result.get("review") or {}
    if review.get("items"):
        chosen = ", ".join(f"{k} {v}" for k, v in review["strategies"].items())
        print(f"  review queue: {review['items']} items ({chosen}) in "
              f"{result['report'].rstrip('/')}/review/ (review_sheet.html, queue.csv, "
              f"label_studio/); then: bifocal review ingest {result['mlflow_run_id']} FILE...")
    if result.get("spooled"):
        print(f"  {result['spooled']}")


def run_with_gap(config: Any, split: str, as_json: bool) -> int:
    """``bifocal run --compare-split SPLIT``: both evaluations, then the gap table."""
    from flows.gap import generalisation_gap, other_split_config

    other_split_config(config, split)  # a config error before any server starts
    result = generalisation_gap(config, split)
    if as_json:
        print(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=2,
                         default=str))
        return 0
    for side in ("evaluated", "other"):
        _print_summary(result[side])
    run_id = result["evaluated"]["mlflow_run_id"]
    print(f"generalisation gap ({split} - {config.dataset.split}), unpaired bootstrap "
          f"{config.statistics.level:.0%} intervals; logged on run {run_id}:")
    for line in result["text"].splitlines():
        print(f"  {line}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tasks.plan import check_config, check_inputs

    config = _load_config(args.config, args.set)
    check_config(config)
    check_inputs(config)  # the dataset file and the checkpoint, before a Prefect server starts
    if args.compare_split:
        return run_with_gap(config, args.compare_split, args.json)
    from flows.evaluate import evaluate
    from tasks.gate import GateFailed

    failed: GateFailed | None = None
    try:
        result = evaluate(config)
    except GateFailed as error:  # the evaluation finished and its gate failed: show it, exit 3
        if not isinstance(error.result, dict):
            raise
        result, failed = error.result, error
    from tasks.tracking.mlflow_log import spool_notice

    if notice := spool_notice(result["mlflow_run_id"]):  # MLflow went away: results spooled
        result = {**result, "spooled": notice}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_summary(result)
    if failed is not None:
        raise failed
    return 0


def _load_config(path: str, overrides: list[str]) -> Any:
    import yaml

    from tasks.config_io import ConfigError, load_config, parse_override

    for text in overrides:  # a value is parsed as YAML: name the override that is not
        try:
            parse_override(text)
        except yaml.YAMLError as error:
            problem = " ".join(str(error).split())
            raise ConfigError(f"override {text!r}: the value is not valid YAML ({problem})"
                              ) from None
    try:
        return load_config(path, overrides)
    except UnicodeDecodeError as error:  # e.g. a spreadsheet or a binary file given as config
        raise ConfigError(f"cannot read config {path}: not UTF-8 text ({error.reason} at byte "
                          f"{error.start}); a config is a YAML file") from None


def _promoted(gate: dict[str, Any]) -> list[str]:
    promoted = gate.get("promoted")
    if not promoted:
        return []
    return [f"promoted: {promoted['model_name']} version {promoted['version']} -> "
            f"@{promoted['alias']}"]


def cmd_compare(args: argparse.Namespace) -> int:
    """Prints the comparison; exit status 0, 3 when a --gate rule fails (2: runs that cannot
    be found or compared)."""
    from pydantic import ValidationError

    from tasks.config import StatisticsConfig
    from tasks.config_io import format_validation_error
    from tasks.gate import GateFailed, parse_rule
    from tasks.secrets import split_tracking_uri

    rules = [parse_rule(text) for text in args.gate]
    try:
        statistics = StatisticsConfig(bootstrap=args.bootstrap, level=args.level,
                                      method=args.method, seed=args.seed)
    except ValidationError as error:
        raise ValueError(format_validation_error(error)) from None
    from flows.compare import compare

    failed: GateFailed | None = None
    try:
        result = compare(runs=args.runs, filter_string=args.filter,
                         # credentials go to MLflow's environment, never into the flow
                         # parameters Prefect stores
                         tracking_uri=split_tracking_uri(args.tracking_uri),
                         statistics=statistics,
                         permutations=args.permutations, alpha=args.alpha, force=args.force,
                         gate=rules or None)
    except GateFailed as error:
        if not isinstance(error.result, dict):
            raise
        result, failed = error.result, error
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=2))
    else:
        print(result["text"], end="")
        print(f"comparison run: {result['mlflow_run_id']} ({result['tracking_uri']})")
    if failed is not None:
        raise failed
    return 0


def cmd_review_ingest(args: argparse.Namespace) -> int:
    """Ingest completed reviews; prints the human metrics and agreement (exit 2: a file that
    cannot be ingested, named with its line)."""
    from flows.review import review_ingest
    from tasks.secrets import split_tracking_uri

    result = review_ingest(run_id=args.run_id, files=args.files, reviewer=args.reviewer,
                           tracking_uri=split_tracking_uri(args.tracking_uri))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=2))
    else:
        print(result["text"], end="")
        print(f"review run: {result['mlflow_run_id']} ({result['tracking_uri']})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    run_demo(overrides=args.set, root=args.root)
    return 0


def cmd_suite(args: argparse.Namespace) -> int:
    """Exit status 0 when every evaluation succeeded, 1 when any failed (2: invalid suite)."""
    from tasks.suite import check_suite, load_suite, summary_lines

    suite_config = load_suite(args.suite, args.set)
    check_suite(suite_config)
    from flows.suite import SuiteFailed, suite

    try:
        result, status = suite(suite_config), 0
    except SuiteFailed as error:
        if error.result is None:
            raise
        result, status = error.result, 1
        failed = ", ".join(failure["label"] for failure in result["failures"])
        print(f"bifocal: error: evaluations failed: {failed}", file=sys.stderr)
    print(json.dumps(result, indent=2, default=str) if args.json
          else "\n".join(summary_lines(result)))
    return status


def cmd_score_retrieval(args: argparse.Namespace) -> int:
    import numpy as np

    from tasks.metrics import get_metric
    from tasks.metrics.retrieval import RetrievalInputs

    def load(path: str, name: str) -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read {name} {path}: {error}") from None

    inputs = RetrievalInputs(
        load(args.image_embeddings, "--image-embeddings"),
        load(args.text_embeddings, "--text-embeddings"),
        load(args.text_to_image, "--text-to-image"),
    )
    result = get_metric("retrieval")(inputs, ks=args.ks)
    document = {"metrics": result.corpus | _intervals(args, inputs, result.per_sample,
                                                      result.estimates)}
    if result.extra.get("warnings"):
        document["warnings"] = result.extra["warnings"]
    if args.per_sample:
        document["per_sample"] = {k: v.tolist() for k, v in result.per_sample.items()
                                  if not _internal(k)}
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _metric_names(text: str | None) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()] if text else []


def _intervals(args: argparse.Namespace, inputs: Any, per_sample: dict[str, Any],
               estimates: dict[str, Any]) -> dict[str, float]:
    """``<metric>_ci_low`` / ``_ci_high`` with ``--bootstrap N`` (none by default)."""
    if not args.bootstrap:
        return {}
    from tasks.scoring_io import statistics_table
    from tasks.stats.bootstrap import BootstrapSettings
    from tasks.stats.estimates import interval_metrics

    settings = BootstrapSettings(args.bootstrap, args.level, args.method, args.seed)
    return interval_metrics(statistics_table(inputs, per_sample), estimates, settings)


def _internal(column: str) -> bool:
    """Sufficient-statistic columns (``bleu.stat.0``, ...) stay out of printed per-sample
    values."""
    return ".stat." in column


def _print_scored(task: str, scoring: ScoringInputs, metrics: list[str],
                  args: argparse.Namespace) -> int:
    """Run the task's metrics and print {"metrics", "per_sample", ...} as one JSON document."""
    from tasks.metrics.runner import run_metrics

    run = run_metrics(task, metrics, scoring.inputs, {})
    per_sample = {
        item: {name: _plain(values[row]) for name, values in run.per_sample.items()
               if not _internal(name)}
        for row, item in enumerate(scoring.ids)
    }
    metrics_out = run.metrics | _intervals(args, scoring.inputs, run.per_sample, run.estimates)
    document: dict[str, Any] = {"metrics": metrics_out, "per_sample": per_sample}
    if run.skipped:
        document["skipped_metrics"] = run.skipped
    if scoring.skipped:
        document["skipped"] = scoring.skipped
    if run.warnings:
        document["warnings"] = run.warnings
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def cmd_score_captioning(args: argparse.Namespace) -> int:
    from tasks.scoring_io import captioning_inputs

    return _print_scored("captioning", captioning_inputs(args.predictions, args.references),
                         _metric_names(args.metrics), args)


def cmd_score_vqa(args: argparse.Namespace) -> int:
    from tasks.scoring_io import vqa_inputs

    return _print_scored("vqa", vqa_inputs(args.predictions, args.answers), [], args)


def cmd_score_classification(args: argparse.Namespace) -> int:
    from tasks.scoring_io import classification_inputs

    names = [n.strip() for n in args.classes.split(",")] if args.classes else None
    return _print_scored("classification",
                         classification_inputs(args.predictions, args.labels, names), [], args)


def cmd_runs_cleanup(args: argparse.Namespace) -> int:
    """End runs left RUNNING by a dead process KILLED (their Prefect flow runs Crashed) and
    remove stale inference-cache staging folders; exit status 0."""
    from tasks.maintenance import cleanup
    from tasks.tracking import mlflow_log as ml

    report = cleanup(ml.tracking_uri(args.tracking_uri), experiments=args.experiment or None,
                     older_than=args.older_than, work_dirs=args.work_dir, dry_run=args.dry_run)
    print(json.dumps(report.to_json(), indent=2) if args.json else "\n".join(report.lines()))
    return 0


def cmd_runs_flush(args: argparse.Namespace) -> int:
    from tasks.tracking.flush import flush
    from tasks.tracking.spool import spool_root

    results = flush(args.work_dir, args.tracking_uri)
    if not results:
        print(f"nothing spooled under {spool_root(args.work_dir)}")
    for result in results:
        print(f"{result.status}: {result.message}")
    return 0 if all(r.status == "flushed" for r in results) else 1


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=None, metavar="URI",
                        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else "
                        "sqlite:///mlflow.db)")


def add_runs_commands(commands: Any) -> None:
    """``bifocal runs ...``: housekeeping of MLflow runs and their leftovers."""
    runs = commands.add_parser("runs", help="housekeeping of evaluation runs")
    actions = runs.add_subparsers(dest="runs_command", required=True)
    cleanup = actions.add_parser(
        "cleanup", help="end runs of killed processes KILLED, remove stale cache staging folders",
        description="A RUNNING run is dead when its process (tags bifocal.pid/bifocal.host) is "
        "gone from this machine, or, for another machine's run, when its bifocal.heartbeat is "
        "older than --older-than (default 900 s). Dead runs end KILLED with the tag "
        "bifocal.error, their Prefect flow runs are set Crashed on the Prefect API "
        "($PREFECT_API_URL) when the run recorded one (tag prefect.flow_run_id: runs started "
        "against a Prefect server that outlives the command).")
    cleanup.add_argument("--experiment", action="append", default=[], metavar="NAME",
                         help="only this experiment (repeatable; default all)")
    add_tracking_uri(cleanup)
    cleanup.add_argument("--older-than", type=float, default=None, metavar="SECONDS",
                         help="heartbeat age limit for runs of other machines (default 900); "
                         "given, it also ends runs without owner tags started longer ago, and "
                         "removes staging folders of unknown writers this old (default 1 day)")
    cleanup.add_argument("--work-dir", action="append", default=[], metavar="DIR",
                         help="work_dir whose cache/inference staging folders are checked "
                         "(repeatable)")
    cleanup.add_argument("--dry-run", action="store_true", help="only list what would be done")
    cleanup.add_argument("--json", action="store_true", help="print the result as JSON")
    cleanup.set_defaults(handler=cmd_runs_cleanup)
    flush = actions.add_parser(
        "flush", help="send results spooled while MLflow was unreachable; exit status 1 when "
        "some could not be sent (they stay spooled)",
        description="Replays WORK_DIR/spool/<run_id>/ in order (metrics, params, tags, tables, "
        "artifacts, dataset inputs), ends each run with its recorded status (FAILED when none "
        "was recorded) and removes what was sent.")
    flush.add_argument("--work-dir", default=None, metavar="DIR",
                       help="the evaluation's work_dir (default .bifocal/work)")
    flush.add_argument("--tracking-uri", default=None, metavar="URI",
                       help="MLflow tracking URI (default: the one each run was started with)")
    flush.set_defaults(handler=cmd_runs_flush)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bifocal", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks: with the error line, and in Prefect's task and "
                        "flow failure logs (expected errors print one line without)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the evaluate flow on a YAML config")
    run.add_argument("config", help="YAML file with an EvalConfig")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set model.batch_size=32")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("--compare-split", default=None, metavar="SPLIT",
                     help="also evaluate on SPLIT (e.g. train) of the same dataset and report "
                     "every metric's generalisation gap (SPLIT - dataset.split) with an unpaired "
                     "bootstrap interval")
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="build the demo assets and evaluate both demo models")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    demo.add_argument("--root", default=None, help="demo assets folder (default .bifocal/demo)")
    demo.set_defaults(handler=cmd_demo)

    suite = commands.add_parser("suite", help="evaluate models x datasets of a suite YAML; "
                                "exit status 1 when an evaluation failed")
    suite.add_argument("suite", help="YAML file with a SuiteConfig")
    suite.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a suite field, e.g. --set shared.review.size=0 or "
                       "--set models.NAME.batch_size=32")
    suite.add_argument("--json", action="store_true", help="print the result as JSON")
    suite.set_defaults(handler=cmd_suite)

    compare = commands.add_parser(
        "compare", help="paired comparison of MLflow runs (first = baseline); exit status 3 "
        "when a --gate rule fails",
        description="Compare run A (the first) with every other run: delta B - A, paired "
        "bootstrap CI, permutation or McNemar p, Holm-adjusted p, effect size. Exit status: 0, "
        "3 when a --gate rule fails, 2 when the runs cannot be found or compared.")
    compare.add_argument("runs", nargs="+", metavar="RUN",
                         help="MLflow run id, experiment:NAME (its finished evaluation runs, "
                         "oldest first) or models:/NAME@ALIAS")
    compare.add_argument("--filter", default=None, metavar="F",
                         help="MLflow search filter for experiment:NAME, e.g. "
                         "\"tags.bifocal.task = 'retrieval'\"")
    compare.add_argument("--force", action="store_true",
                         help="compare runs on different datasets (the rows both scored)")
    compare.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                         help="paired bootstrap resamples (default 1000)")
    compare.add_argument("--level", type=float, default=0.95, help="confidence level")
    compare.add_argument("--method", choices=["percentile", "bca"], default="percentile")
    compare.add_argument("--seed", type=int, default=0, help="resampling seed")
    compare.add_argument("--permutations", type=int, default=9999, metavar="N",
                         help="random swaps of the paired permutation test (default 9999)")
    compare.add_argument("--alpha", type=float, default=0.05,
                         help="significance level of the ↑/↓ verdicts (Holm-adjusted p)")
    compare.add_argument("--gate", action="append", default=[], metavar="METRIC:MAX_DROP[:ALPHA]",
                         help="fail (exit 3) when METRIC drops by more than MAX_DROP and the "
                         "drop is significant (Holm over the gate rules, alpha default 0.05)")
    compare.add_argument("--json", action="store_true", help="print everything as JSON")
    add_tracking_uri(compare)
    compare.set_defaults(handler=cmd_compare)

    review = commands.add_parser("review", help="human review of an evaluation's queue")
    review_commands = review.add_subparsers(dest="review_command", required=True)
    ingest = review_commands.add_parser(
        "ingest", help="ingest completed reviews into the run (child run review-N)",
        description="Read completed reviews of RUN_ID's queue (the review sheet's CSV, the "
        "queue's CSV or JSONL filled in, Label Studio's JSON export), check them, and record "
        "the human metrics and the human-automatic and inter-rater agreement on MLflow.")
    ingest.add_argument("run_id", metavar="RUN_ID", help="the evaluation's MLflow run id")
    ingest.add_argument("files", nargs="+", metavar="FILE", help="review files")
    ingest.add_argument("--reviewer", default=None, help="rater of rows that name none "
                        "(default: the file's name)")
    add_tracking_uri(ingest)
    ingest.add_argument("--json", action="store_true", help="print the result as JSON")
    ingest.set_defaults(handler=cmd_review_ingest)

    score = commands.add_parser("score", help="score precomputed model outputs")
    bootstrap = argparse.ArgumentParser(add_help=False)
    bootstrap.add_argument("--bootstrap", type=int, default=0, metavar="N",
                           help="bootstrap resamples for <metric>_ci_low/_ci_high (0 = none)")
    bootstrap.add_argument("--level", type=float, default=0.95, help="confidence level")
    bootstrap.add_argument("--method", choices=["percentile", "bca"], default="percentile")
    bootstrap.add_argument("--seed", type=int, default=0, help="resampling seed")
    kinds = score.add_subparsers(dest="kind", required=True)
    retrieval = kinds.add_parser("retrieval", parents=[bootstrap],
                                help="recall@k and ranks from embeddings (.npy)")
    retrieval.add_argument("--image-embeddings", required=True, metavar="I.npy")
    retrieval.add_argument("--text-embeddings", required=True, metavar="T.npy")
    retrieval.add_argument("--text-to-image", required=True, metavar="IDX.npy",
                           help="IDX[j] = image row of text j")
    retrieval.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10])
    retrieval.add_argument("--per-sample", action="store_true", help="include per-sample ranks")
    retrieval.set_defaults(handler=cmd_score_retrieval)

    captioning = kinds.add_parser("captioning", parents=[bootstrap],
                                 help="caption metrics (coco-caption parity)")
    captioning.add_argument("--predictions", required=True, metavar="P",
                            help="id -> caption (JSON object, COCO results list, JSONL or CSV)")
    captioning.add_argument("--references", required=True, metavar="R",
                            help="id -> list of captions (JSON, COCO annotations, JSONL or CSV)")
    captioning.add_argument("--metrics", default=None,
                            help="comma-separated, e.g. bleu,meteor,rouge_l,cider (default all)")
    captioning.set_defaults(handler=cmd_score_captioning)

    vqa = kinds.add_parser("vqa", parents=[bootstrap], help="official VQA accuracy")
    vqa.add_argument("--predictions", required=True, metavar="P",
                     help="question id -> answer (JSON object/list, JSONL or CSV)")
    vqa.add_argument("--answers", required=True, metavar="A",
                     help="question id -> list of human answers, or objects with answers, "
                     "question_type, answer_type (also the official annotations file)")
    vqa.set_defaults(handler=cmd_score_vqa)

    classification = kinds.add_parser("classification", parents=[bootstrap],
                                     help="accuracy, F1, confusion matrix")
    classification.add_argument("--predictions", required=True, metavar="P",
                                help="id -> predicted class")
    classification.add_argument("--labels", required=True, metavar="L", help="id -> true class")
    classification.add_argument("--classes", default=None,
                                help="comma-separated class names (default: labels + predictions)")
    classification.set_defaults(handler=cmd_score_classification)
    add_runs_commands(commands)
    add_services_parser(commands)
    add_serve_parser(commands)
    return parser


def expected_error(error: BaseException) -> bool:
    """An error this project raises on purpose about its inputs (``ConfigError``,
    ``DataError``, ``ModelError``, ``InputFileError``, ``ComparisonError``, ...: ValueError
    subclasses defined in ``tasks``/``flows``): reported as one line, without a traceback."""
    return (isinstance(error, ValueError)
            and type(error).__module__.split(".")[0] in ("tasks", "flows"))


class _ExpectedErrorTraceback(logging.Filter):
    """Drops the traceback from Prefect's "Task run failed with exception ..." and "Encountered
    exception during execution ..." logs when the error is an expected one; the one-line log
    message stays (console and Prefect API), and the CLI ends with the error line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None \
                and expected_error(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


@contextmanager
def quiet_expected_errors(enabled: bool = True) -> Iterator[None]:
    """While a command runs: no tracebacks in Prefect's task/flow run failure logs for
    expected errors (``--debug`` keeps them)."""
    if not enabled:
        yield
        return
    quiet = _ExpectedErrorTraceback()
    loggers = [logging.getLogger(name) for name in PREFECT_RUN_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def one_line(error: BaseException) -> str:
    """The error message on one line: a multi-line one (several config problems under
    "invalid configuration:") is joined with "; "."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    head, rest = lines[0], lines[1:]
    if rest and head.endswith(":"):
        return f"{head} {'; '.join(rest)}"
    return "; ".join(lines)


TEMPORARY_SERVER_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect"


def main(argv: list[str] | None = None) -> int:
    """Exit status 0; 2 with one line ``bifocal: error: ...`` on stderr for an invalid config,
    dataset, checkpoint or input file (``--debug`` adds the traceback); 3 when a gate fails;
    1 when the temporary Prefect server does not start in time."""
    apply_defaults()
    args = build_parser().parse_args(argv)
    from tasks.gate import GateFailed

    try:
        with quiet_expected_errors(enabled=not args.debug):
            return args.handler(args)
    except GateFailed as error:  # the evaluation or comparison ran; a gate rule failed
        print(f"bifocal: {error}", file=sys.stderr)
        return 3
    except ValueError as error:  # ConfigError, DataError, ModelError, InputFileError, ...
        if args.debug:
            traceback.print_exc()
        print(f"bifocal: error: {error if args.debug else one_line(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if args.debug or not str(error).startswith(TEMPORARY_SERVER_TIMEOUT):
            raise
        print("bifocal: error: the temporary Prefect server did not start within "
              f"{os.environ['PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS']} s; raise "
              "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or point PREFECT_API_URL at a "
              "running server", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
