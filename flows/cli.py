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
    width = max(len(k) for k in result["metrics"]) if result["metrics"] else 10
    print(f"\n{result['run_name']}")
    for key, value in result["metrics"].items():
        print(f"  {key:<{width}}  {value:.4f}")
    counts = ", ".join(f"{k}={v}" for k, v in result["counts"].items())
    print(f"  counts: {counts}")
    for warning in result.get("warnings", []):
        print(f"  warning: {warning}")
    print(f"  inference cache: {result['inference_cache']}")
    print(f"  MLflow run: {result['mlflow_run_id']} ({result['tracking_uri']})")
    print(f"  report: {result['report']}")


def cmd_run(args: argparse.Namespace) -> int:
    from tasks.config_io import load_config
    from tasks.plan import check_config

    config = load_config(args.config, args.set)
    check_config(config)
    from flows.evaluate import evaluate

    result = evaluate(config)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_summary(result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    run_demo(overrides=args.set, root=args.root)
    return 0


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
    document = {"metrics": result.corpus}
    if result.extra.get("warnings"):
        document["warnings"] = result.extra["warnings"]
    if args.per_sample:
        document["per_sample"] = {k: v.tolist() for k, v in result.per_sample.items()}
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _metric_names(text: str | None) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()] if text else []


def _print_scored(task: str, scoring: ScoringInputs, metrics: list[str]) -> int:
    """Run the task's metrics and print {"metrics", "per_sample", ...} as one JSON document."""
    from tasks.metrics.runner import run_metrics

    run = run_metrics(task, metrics, scoring.inputs, {})
    per_sample = {
        item: {name: _plain(values[row]) for name, values in run.per_sample.items()}
        for row, item in enumerate(scoring.ids)
    }
    document: dict[str, Any] = {"metrics": run.metrics, "per_sample": per_sample}
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
                         _metric_names(args.metrics))


def cmd_score_vqa(args: argparse.Namespace) -> int:
    from tasks.scoring_io import vqa_inputs

    return _print_scored("vqa", vqa_inputs(args.predictions, args.answers), [])


def cmd_score_classification(args: argparse.Namespace) -> int:
    from tasks.scoring_io import classification_inputs

    names = [n.strip() for n in args.classes.split(",")] if args.classes else None
    return _print_scored("classification",
                         classification_inputs(args.predictions, args.labels, names), [])


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

    score = commands.add_parser("score", help="score precomputed model outputs")
    kinds = score.add_subparsers(dest="kind", required=True)
    retrieval = kinds.add_parser("retrieval", help="recall@k and ranks from embeddings (.npy)")
    retrieval.add_argument("--image-embeddings", required=True, metavar="I.npy")
    retrieval.add_argument("--text-embeddings", required=True, metavar="T.npy")
    retrieval.add_argument("--text-to-image", required=True, metavar="IDX.npy",
                           help="IDX[j] = image row of text j")
    retrieval.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10])
    retrieval.add_argument("--per-sample", action="store_true", help="include per-sample ranks")
    retrieval.set_defaults(handler=cmd_score_retrieval)

    captioning = kinds.add_parser("captioning", help="caption metrics (coco-caption parity)")
    captioning.add_argument("--predictions", required=True, metavar="P",
                            help="id -> caption (JSON object, COCO results list, JSONL or CSV)")
    captioning.add_argument("--references", required=True, metavar="R",
                            help="id -> list of captions (JSON, COCO annotations, JSONL or CSV)")
    captioning.add_argument("--metrics", default=None,
                            help="comma-separated, e.g. bleu,meteor,rouge_l,cider (default all)")
    captioning.set_defaults(handler=cmd_score_captioning)

    vqa = kinds.add_parser("vqa", help="official VQA accuracy")
    vqa.add_argument("--predictions", required=True, metavar="P",
                     help="question id -> answer (JSON object/list, JSONL or CSV)")
    vqa.add_argument("--answers", required=True, metavar="A",
                     help="question id -> list of human answers, or objects with answers, "
                     "question_type, answer_type (also the official annotations file)")
    vqa.set_defaults(handler=cmd_score_vqa)

    classification = kinds.add_parser("classification", help="accuracy, F1, confusion matrix")
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
    from tasks.models.base import ModelError

    try:
        return args.handler(args)
    except (ConfigError, DataError, ModelError, ValueError) as error:
        print(f"bifocal: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
