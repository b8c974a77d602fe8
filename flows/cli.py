"""The ``bifocal`` command line: run an evaluation, run the demo, score precomputed outputs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

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


def cmd_run(args: argparse.Namespace) -> int:
    from tasks.config_io import load_config
    from tasks.plan import check_config

    config = load_config(args.config, args.set)
    check_config(config)
    from flows.evaluate import evaluate
    from tasks.gate import GateFailed

    failed: GateFailed | None = None
    try:
        result = evaluate(config)
    except GateFailed as error:  # the evaluation finished and its gate failed: show it, exit 3
        if not isinstance(error.result, dict):
            raise
        result, failed = error.result, error
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_summary(result)
    if failed is not None:
        raise failed
    return 0


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
                         tracking_uri=args.tracking_uri, statistics=statistics,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bifocal", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the evaluate flow on a YAML config")
    run.add_argument("config", help="YAML file with an EvalConfig")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set model.batch_size=32")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
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
    compare.add_argument("--tracking-uri", default=None, metavar="URI",
                         help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else "
                         "sqlite:///mlflow.db)")
    compare.set_defaults(handler=cmd_compare)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_defaults()
    args = build_parser().parse_args(argv)
    from tasks.config_io import ConfigError
    from tasks.data.base import DataError
    from tasks.gate import GateFailed
    from tasks.models.base import ModelError

    try:
        return args.handler(args)
    except GateFailed as error:  # the evaluation or comparison ran; a gate rule failed
        print(f"bifocal: {error}", file=sys.stderr)
        return 3
    except (ConfigError, DataError, ModelError, ValueError) as error:
        print(f"bifocal: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
