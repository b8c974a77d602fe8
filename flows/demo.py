"""The demo: build the synthetic benchmark and two small CLIP models (cached), evaluate both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.evaluate import evaluate
from tasks.config import EvalConfig, build_config

# The demo's embedded defaults; `bifocal demo --set key=value` overrides any of them.
DEMO_DEFAULTS: dict[str, Any] = {
    "task": "retrieval",
    "model": {"kind": "dual_encoder", "batch_size": 64},
    "dataset": {"source": "manifest"},
    "review": {"strategy": "worst_and_random", "size": 20, "seed": 0},
    "report": {"destination": "reports/demo"},
    "tracking": {"experiment": "bifocal-demo"},
}
COLUMNS = ["i2t_recall_at_1", "i2t_recall_at_5", "i2t_recall_at_10",
           "t2i_recall_at_1", "t2i_recall_at_5", "t2i_recall_at_10"]


@task(name="demo-assets", retries=1)
def build_assets(root: str | None) -> Any:
    """Synthetic benchmark + two trained CLIP-style models; reused when already built."""
    from tasks.demo import ensure_demo_assets

    return ensure_demo_assets(Path(root) if root else None)


def demo_configs(assets: Any, overrides: list[str]) -> list[EvalConfig]:
    configs = []
    for name, path in sorted(assets.models.items()):
        data = {**DEMO_DEFAULTS,
                "model": {**DEMO_DEFAULTS["model"], "path": str(path)},
                "dataset": {**DEMO_DEFAULTS["dataset"], "path": str(assets.test_manifest)},
                "tracking": {**DEMO_DEFAULTS["tracking"], "run_name": f"{name}@demo-test"}}
        configs.append(build_config(data, overrides))
    return configs


def comparison_table(results: list[dict[str, Any]]) -> list[str]:
    header = ["model", *[c.replace("_recall_at_", " R@") for c in COLUMNS], "cache",
              "MLflow run", "report"]
    rows = [[r["run_name"].split("@")[0], *[f"{r['metrics'][c]:.3f}" for c in COLUMNS],
             r["inference_cache"], r["mlflow_run_id"], r["report"]] for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True))
            for row in [header, *rows]]


@flow(name="demo", log_prints=True)
def demo(overrides: list[str] | None = None, root: str | None = None) -> list[dict[str, Any]]:
    """Evaluate both demo models on the demo benchmark's test split and compare them."""
    assets = build_assets(root)
    results = [evaluate(config) for config in demo_configs(assets, overrides or [])]
    table = comparison_table(results)
    create_markdown_artifact("```\n" + "\n".join(table) + "\n```", key="bifocal-demo",
                             description="Demo comparison")
    return results


def run_demo(overrides: list[str] | None = None, root: str | None = None) -> list[dict]:
    results = demo(overrides=overrides or [], root=root)
    print("\nDemo: retrieval on the synthetic shapes benchmark (test split)\n")
    print("\n".join(comparison_table(results)))
    tracking = results[0]["tracking_uri"] if results else ""
    print(f"\nOpen the MLflow UI: mlflow ui --backend-store-uri {tracking}")
    return results
