"""The demo: build the synthetic benchmark and small models (cached), evaluate every task kind.

Retrieval compares the two CLIP-style models; zero-shot classification and image-text matching
use the better one; captioning and VQA use the demo captioner. Each is one evaluate flow run
(one MLflow run) under the demo flow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.evaluate import evaluate
from tasks.config import EvalConfig
from tasks.config_io import build_config
from tasks.demo.generated import write_generated_sets
from tasks.steps import build_demo_assets
from tasks.tracking.run import cpu_model

# The demo's embedded defaults; `bifocal demo --set key=value` overrides any of them.
DEMO_DEFAULTS: dict[str, Any] = {
    "model": {"batch_size": 64},
    "review": {"size": 20, "seed": 0},
    "report": {"destination": "reports/demo"},
    "tracking": {"experiment": "bifocal-demo"},
}
RETRIEVAL_COLUMNS = ["i2t_recall_at_1", "i2t_recall_at_5", "i2t_recall_at_10",
                     "t2i_recall_at_1", "t2i_recall_at_5", "t2i_recall_at_10"]
HEADLINES = {
    "zero_shot_classification": ["accuracy", "macro_f1"],
    "matching": ["accuracy", "f1", "auroc"],
    "captioning": ["bleu_4", "rouge_l", "cider", "meteor", "clip_score"],
    "text_to_image": ["fid", "kid", "precision", "recall", "clip_score"],
    "vqa": ["vqa_accuracy", "vqa_accuracy.answer_type.other", "vqa_accuracy.answer_type.yes_no"],
}
SEVERITIES = [1, 3, 5]
ROBUSTNESS = {"corruptions": ["gaussian_noise", "gaussian_blur", "jpeg", "contrast"],
              "severities": SEVERITIES,
              "adversarial": {"attacks": ["fgsm"], "epsilons": [1 / 255, 4 / 255]}}
BEST_CLIP = "clip-tiny-long"
OTHER_CLIP = "clip-tiny-short"
# The regression gate of the demo: no significant drop of either direction's R@1.
GATE_RULES = [{"metric": "i2t_recall_at_1"}, {"metric": "t2i_recall_at_1"}]


def _config(name: str, fields: dict[str, Any], overrides: list[str]) -> EvalConfig:
    data = {**DEMO_DEFAULTS, **fields,
            "model": {**DEMO_DEFAULTS["model"], **fields["model"]},
            "tracking": {**DEMO_DEFAULTS["tracking"], "run_name": name}}
    return build_config(data, overrides)


SLICE_COLUMNS = ["background", "size", "position"]


def retrieval_configs(assets: Any, overrides: list[str]) -> list[EvalConfig]:
    return [_config(f"{name}@demo-test", {
        "task": "retrieval", "model": {"kind": "dual_encoder", "path": str(path)},
        "dataset": {"path": str(assets.test_manifest)},
        "slices": {"columns": SLICE_COLUMNS, "min_size": 30}}, overrides)
        for name, path in sorted(assets.models.items())]


def other_task_configs(assets: Any, overrides: list[str]) -> list[EvalConfig]:
    clip = str(assets.models[BEST_CLIP])
    test = str(assets.test_manifest)
    captioner = str(assets.captioner)
    return [
        _config(f"{BEST_CLIP}@demo-shapes-zero-shot", {
            "task": "zero_shot_classification", "model": {"kind": "dual_encoder", "path": clip},
            "dataset": {"path": test, "columns": {"label": "shape", "captions": None}},
            "zero_shot": {"templates": ["a {}", "a picture of a {}", "a {} shape"]}}, overrides),
        _config(f"{BEST_CLIP}@demo-shapes-robustness", {
            "task": "zero_shot_classification", "model": {"kind": "dual_encoder", "path": clip},
            "dataset": {"path": test, "columns": {"label": "shape", "captions": None}},
            "zero_shot": {"templates": ["a {}", "a picture of a {}", "a {} shape"]},
            "robustness": ROBUSTNESS}, overrides),
        _config(f"{BEST_CLIP}@demo-matching", {
            "task": "matching", "model": {"kind": "dual_encoder", "path": clip},
            "dataset": {"path": test}, "matching": {"negatives": "random"}}, overrides),
        _config(f"{assets.captioner.name}@demo-captioning", {
            "task": "captioning", "model": {"kind": "captioner", "path": captioner,
                                            "generation": {"max_new_tokens": 24}},
            "dataset": {"path": test},
            "metrics": ["bleu", "rouge_l", "cider", "meteor", "clip_score"],
            "metric_options": {"clip_score": {"model": clip}}}, overrides),
        _config(f"{assets.captioner.name}@demo-vqa", {
            "task": "vqa", "model": {"kind": "vqa", "path": captioner,
                                     "generation": {"max_new_tokens": 4}},
            "dataset": {"path": str(assets.vqa_manifest),
                        "columns": {"captions": "answers", "label": None}}}, overrides),
    ]


def text_to_image_configs(assets: Any, overrides: list[str]) -> list[EvalConfig]:
    """FID/KID of a stand-in generator: train images as "generated" (clean and degraded)
    against the test images as references (``tasks.demo.generated``)."""
    sets = write_generated_sets(assets.dataset_root)
    clip = str(assets.models[BEST_CLIP])
    return [_config(f"{BEST_CLIP}@demo-text-to-image-{name}", {
        "task": "text_to_image", "model": {"kind": "dual_encoder", "path": clip},
        "dataset": {"path": str(manifest), "root": str(assets.dataset_root),
                    "columns": {"captions": "prompt", "label": None}},
        "text_to_image": {"references": str(sets.references),
                          "reference_root": str(assets.dataset_root)}}, overrides)
        for name, manifest in (("clean", sets.clean), ("degraded", sets.degraded))]


def robustness_lines(result: dict[str, Any]) -> list[str]:
    """The headline per corruption and severity, and accuracy under FGSM by epsilon."""
    report = json.loads((Path(result["report"]) / "report.json").read_text())
    robust = report.get("robustness") or {}
    headline = str(robust.get("headline") or report["headline"])
    severities = [str(s) for s in SEVERITIES]
    rows = [[name, *[_value(entry.get("severities", {}).get(s, {}).get(headline))
                     for s in severities],
             _value((entry.get("mean") or {}).get(headline)),
             _value((entry.get("relative_drop") or {}).get(headline))]
            for name, entry in (robust.get("corruptions") or {}).items()]
    lines = _table([f"{headline} (clean {report['metrics'][headline]:.3f})",
                    *[f"severity {s}" for s in severities], "mean", "relative drop"], rows)
    adversarial = robust.get("adversarial") or {}
    for point in adversarial.get("curve") or []:
        if point.get("metric") == headline and point.get("epsilon"):
            lines.append(f"{point['attack'].upper()} epsilon {point['epsilon'] * 255:.0f}/255: "
                         f"{headline} {point['value']:.3f}")
    return lines


def _value(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True))
            for row in [header, *rows]]


def comparison_table(results: list[dict[str, Any]]) -> list[str]:
    header = ["model", *[c.replace("_recall_at_", " R@") for c in RETRIEVAL_COLUMNS], "cache",
              "MLflow run", "report"]
    rows = [[r["run_name"].split("@")[0], *[f"{r['metrics'][c]:.3f}" for c in RETRIEVAL_COLUMNS],
             r["inference_cache"], r["mlflow_run_id"], r["report"]] for r in results]
    return _table(header, rows)


def interval_table(results: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """The headline recalls with their 95% bootstrap intervals."""
    def cell(metrics: dict[str, float], key: str) -> str:
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
        return f"{metrics[key]:.3f}{interval}"

    rows = [[r["run_name"].split("@")[0], *[cell(r["metrics"], k) for k in keys]]
            for r in results]
    return _table(["model", *[k.replace("_recall_at_", " R@") for k in keys]], rows)


def slice_lines(result: dict[str, Any]) -> list[str]:
    """Per slice column: the worst and best value of the headline metric, with the
    slice-vs-rest test of each (Holm-adjusted across all slices)."""
    report = json.loads((Path(result["report"]) / "report.json").read_text())
    slices = report.get("slices", {}).get("results", [])
    headline = report["headline"]
    lines = []
    for column in SLICE_COLUMNS:
        scored = [s for s in slices if s["columns"] == column and headline in s["metrics"]]
        if len(scored) < 2:
            continue
        scored.sort(key=lambda s: s["metrics"][headline]["value"])
        parts = [_slice_cell(s, headline) for s in (scored[0], scored[-1])]
        gap = report["slices"]["gaps"].get(column, {}).get(headline, float("nan"))
        lines.append(f"  {column:<10} worst {parts[0]}   best {parts[1]}   gap {gap:.3f}")
    return lines


def _slice_cell(result: dict[str, Any], headline: str) -> str:
    value = result["metrics"][headline]
    test = result["headline_vs_rest"]
    p = f", p_holm={test['p_holm']:.3g}" if "p_holm" in test else ""
    return (f"{result['slice'].split('=')[1]}: {value['value']:.3f} "
            f"[{value['ci_low']:.3f}, {value['ci_high']:.3f}] (n={result['size']}{p})")


def task_table(results: list[tuple[str, dict[str, Any]]]) -> list[str]:
    rows = []
    for task_name, result in results:
        shown = [f"{key.split('.')[-1] if '.' in key else key}={result['metrics'][key]:.3f}"
                 for key in HEADLINES[task_name] if key in result["metrics"]]
        rows.append([task_name, result["run_name"], ", ".join(shown),
                     result["mlflow_run_id"], result["report"]])
    return _table(["task", "evaluation", "metrics", "MLflow run", "report"], rows)


@flow(name="demo", log_prints=True)
def demo(overrides: list[str] | None = None, root: str | None = None,
         demo_config: Any = None) -> dict[str, Any]:
    """Evaluate the demo models on every task kind of the demo benchmark's test split
    (``demo_config``: a ``tasks.demo.DemoConfig``, e.g. a tiny one for tests)."""
    assets = build_demo_assets(root, demo_config)
    overrides = overrides or []
    retrieval = [evaluate(config) for config in retrieval_configs(assets, overrides)]
    others = [(config.task.value, evaluate(config))
              for config in [*other_task_configs(assets, overrides),
                             *text_to_image_configs(assets, overrides)]]
    gates = gate_decisions(retrieval)
    lines = comparison_table(retrieval) + [""] + task_table(others) + [""] + gate_lines(gates)
    create_markdown_artifact("```\n" + "\n".join(lines) + "\n```", key="bifocal-demo",
                             description="Demo results")
    return {"retrieval": retrieval, "tasks": others, "gates": gates}


def gate_decisions(retrieval: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gate both ways between the two CLIPs: each as the candidate against the other."""
    from flows.compare import compare
    from tasks.config import GateRule

    runs = {r["run_name"].split("@")[0]: r for r in retrieval}
    if {BEST_CLIP, OTHER_CLIP} - set(runs):
        return []
    rules = [GateRule(**rule) for rule in GATE_RULES]
    decisions = []
    for baseline, candidate in ((OTHER_CLIP, BEST_CLIP), (BEST_CLIP, OTHER_CLIP)):
        result = compare(runs=[runs[baseline]["mlflow_run_id"], runs[candidate]["mlflow_run_id"]],
                         tracking_uri=runs[baseline]["tracking_uri"], gate=rules,
                         fail_on_gate=False)
        decisions.append({"baseline": baseline, "candidate": candidate,
                          "gate": result["gates"][0], "comparison_run": result["mlflow_run_id"]})
    return decisions


def gate_lines(decisions: list[dict[str, Any]]) -> list[str]:
    lines = []
    for decision in decisions:
        gate = decision["gate"]
        lines.append(f"{decision['candidate']} replacing {decision['baseline']}: gate "
                     f"{gate['status'].upper()} (comparison run {decision['comparison_run']})")
        for rule in gate["rules"]:
            lines.append(f"  {'held  ' if rule['held'] else 'FAILED'} {rule['metric']}: delta "
                         f"{rule['delta']:+.3f} [{rule['ci_low']:+.3f}, {rule['ci_high']:+.3f}],"
                         f" p_holm {rule['p_holm']:.2g}")
    return lines


def run_demo(overrides: list[str] | None = None, root: str | None = None) -> dict[str, Any]:
    results = demo(overrides=overrides or [], root=root)
    print("\nDemo: retrieval on the synthetic shapes benchmark (test split)\n")
    print("\n".join(comparison_table(results["retrieval"])))
    print("\nWith 95% bootstrap confidence intervals (1,000 resamples of the images)\n")
    print("\n".join(interval_table(results["retrieval"], ["i2t_recall_at_1", "t2i_recall_at_1"])))
    for result in results["retrieval"]:
        lines = slice_lines(result)
        if lines:
            print(f"\nSlices of {result['run_name']} (i2t R@1 by metadata column)\n")
            print("\n".join(lines))
    print("\nOther task kinds on the same benchmark\n")
    print("\n".join(task_table(results["tasks"])))
    for _, result in results["tasks"]:
        if result["run_name"].endswith("robustness"):
            print(f"\nRobustness of {result['run_name']} (zero-shot accuracy on corrupted and "
                  "attacked images)\n")
            print("\n".join(robustness_lines(result)))
    if results["gates"]:
        print("\nRegression gate (no significant drop of i2t or t2i R@1), both ways\n")
        print("\n".join(gate_lines(results["gates"])))
    tracking = results["retrieval"][0]["tracking_uri"] if results["retrieval"] else ""
    print(f"\nMachine: {cpu_model()} (numbers may move on another CPU: see the README)")
    print(f"\nOpen the MLflow UI: .venv/bin/mlflow ui --backend-store-uri {tracking}")
    return results
