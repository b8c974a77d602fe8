"""The compare flow and ``bifocal compare`` on evaluation runs built in a temporary SQLite MLflow
store; statistics are checked against scipy / statsmodels / numpy, never against our output."""

from __future__ import annotations

import io
import json
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy.stats import binomtest, permutation_test
from statsmodels.stats.multitest import multipletests

from tasks.stats.estimates import Estimate, mean
from tasks.tracking import mlflow_log as ml

pytestmark = pytest.mark.e2e

N = 400
ESTIMATES: dict[str, Estimate] = {
    "i2t_recall_at_1": mean("hit"),
    "clip_score": mean("sim"),
    "i2t_mean_rank": mean("rank"),
}
HIGHER = {"i2t_recall_at_1": True, "clip_score": True, "i2t_mean_rank": False}
FAST = ["--bootstrap", "300", "--permutations", "1999"]


# ---- building runs ------------------------------------------------------------------------------


def base_table(n: int = N, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "item_id": [f"img-{i:04d}" for i in range(n)],
        "status": "scored",
        "shape": rng.choice(["circle", "square"], n),
        "hit": (rng.random(n) < 0.5).astype(float),
        "sim": rng.normal(0.30, 0.05, n),
        "rank": rng.integers(1, 50, n).astype(float),
    })


def improved(table: pd.DataFrame, share: float = 0.3, seed: int = 1) -> pd.DataFrame:
    """A planted improvement: a share of the misses become hits, similarities rise."""
    rng = np.random.default_rng(seed)
    out = table.copy()
    flip = (out["hit"] == 0) & (rng.random(len(out)) < share)
    out.loc[flip, "hit"] = 1.0
    out["sim"] = out["sim"] + 0.02 + rng.normal(0, 0.005, len(out))
    out["rank"] = np.maximum(1, out["rank"] - 3)
    return out


def worse(table: pd.DataFrame, share: float = 0.3, seed: int = 2) -> pd.DataFrame:
    """A planted regression: a share of the hits become misses."""
    rng = np.random.default_rng(seed)
    out = table.copy()
    flip = (out["hit"] == 1) & (rng.random(len(out)) < share)
    out.loc[flip, "hit"] = 0.0
    return out


def noisy(table: pd.DataFrame, seed: int = 4) -> pd.DataFrame:
    """10% of the hits re-drawn at random, similarities jittered: changes both ways, nothing
    systematic."""
    rng = np.random.default_rng(seed)
    out = table.copy()
    redraw = rng.random(len(out)) < 0.1
    out.loc[redraw, "hit"] = (rng.random(int(redraw.sum())) < 0.5).astype(float)
    out["sim"] = out["sim"] + rng.normal(0, 0.01, len(out))
    return out


def report_for(table: pd.DataFrame, name: str, experiment: str, dataset: str, model: str,
               model_path: str) -> dict:
    scored = table[table["status"] == "scored"]
    metrics = {key: float(scored[e.columns[0]].mean()) for key, e in ESTIMATES.items()}
    return {
        "task": "retrieval", "run_name": name, "metrics": metrics, "higher_is_better": HIGHER,
        "estimates": {k: e.to_json() for k, e in ESTIMATES.items()}, "row_key": "item_id",
        "headline": "i2t_recall_at_1", "fingerprints": {"dataset": dataset, "model": model},
        "config": {"task": "retrieval", "model": {"path": model_path},
                   "tracking": {"experiment": experiment}},
        "counts": {"items": len(table)},
    }


def attach_report(uri: str, run_id: str, table: pd.DataFrame, name: str, experiment: str, *,
                  dataset: str = "d" * 64, model: str | None = None,
                  model_path: str = "/models/m") -> None:
    """What the evaluate flow logs onto its run: metrics, the dataset fingerprint tag, and
    report.json + per_sample.parquet under report/."""
    report = report_for(table, name, experiment, dataset, model or name, model_path)
    ml.log_metrics(uri, run_id, report["metrics"])
    ml.set_tags(uri, run_id, {"bifocal.task": "retrieval", "bifocal.dataset_fingerprint": dataset})
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "report.json").write_text(json.dumps(report))
        table.to_parquet(Path(folder) / "per_sample.parquet", index=False)
        ml.log_artifacts(uri, run_id, Path(folder), artifact_path="report")


def log_run(uri: str, experiment: str, name: str, table: pd.DataFrame, *,
            dataset: str = "d" * 64, model: str | None = None, model_path: str = "/models/m",
            tags: dict[str, str] | None = None) -> str:
    """A finished evaluation run with its report artifacts."""
    run_id = ml.start_run(uri, experiment, name, tags or {})
    attach_report(uri, run_id, table, name, experiment, dataset=dataset, model=model,
                  model_path=model_path)
    ml.end_run(uri, run_id)
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def mcnemar_reference(a: pd.DataFrame, b: pd.DataFrame) -> tuple[int, int, float]:
    a_only = int(((a["hit"] == 1) & (b["hit"] == 0)).sum())
    b_only = int(((a["hit"] == 0) & (b["hit"] == 1)).sum())
    return a_only, b_only, binomtest(b_only, a_only + b_only, 0.5).pvalue


def run_cli(*args: str) -> tuple[int, str, str]:
    """``bifocal compare ...`` in this process: (exit status, stdout, stderr). Output goes to
    buffers that stay open (not capsys, whose streams close after the test while Prefect's
    console handler may still hold them)."""
    from flows.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["compare", *args])
    return code, out.getvalue(), err.getvalue()


def by_metric(comparison: dict) -> dict[str, dict]:
    return {m["metric"]: m for m in comparison["metrics"]}


# ---- through the flow ---------------------------------------------------------------------------


def test_identical_runs_show_no_significant_difference(prefect_harness, store):
    from flows.compare import compare

    table = base_table()
    a = log_run(store, "evals", "clip-a", table)
    b = log_run(store, "evals", "clip-b", table.copy())
    result = compare([a, b], tracking_uri=store, permutations=1999)

    (comparison,) = result["comparisons"]
    assert comparison["rows"] == {"baseline_scored": N, "candidate_scored": N, "compared": N}
    for metric in comparison["metrics"]:
        assert metric["delta"] == 0 and metric["pvalue"] == 1.0
        assert metric["verdict"] == "=" and not metric["significant"]
    assert comparison["changed_rows"]["gained_total"] == 0
    assert comparison["changed_rows"]["lost_total"] == 0

    client = MlflowClient(tracking_uri=store)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_run(a).info.experiment_id
    assert run.data.tags["bifocal.baseline_run"] == a
    assert run.data.tags["bifocal.compared_runs"] == f"{a},{b}"
    assert run.data.tags["bifocal.run_kind"] == "comparison"
    assert run.data.metrics["delta.i2t_recall_at_1"] == 0
    assert run.data.metrics["p.clip_score"] == 1.0
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "comparison")}
    assert artifacts == {"comparison/comparison.json", "comparison/comparison.md",
                         "comparison/comparison.html"}
    markdown = Path(client.download_artifacts(run.info.run_id, "comparison/comparison.md",
                                              str(Path(store[10:]).parent))).read_text()
    assert "| metric | A | B | delta [CI] | p (test) | p_holm | effect | verdict |" in markdown
    # comparison runs are not evaluation runs: experiment selectors leave them out
    from tasks.comparison import resolve_runs

    assert resolve_runs(store, ["experiment:evals"]) == [a, b]


def test_a_planted_difference_is_detected_with_the_reference_statistics(prefect_harness,
                                                                         store):
    table = base_table()
    better = improved(table)
    a = log_run(store, "evals", "clip-short", table)
    b = log_run(store, "evals", "clip-long", better)
    code, out, err = run_cli(a, b, "--tracking-uri", store, "--json", *FAST)
    assert code == 0, err
    document = json.loads(out)
    metrics = by_metric(document["comparisons"][0])

    hit = metrics["i2t_recall_at_1"]
    a_only, b_only, p = mcnemar_reference(table, better)
    assert (hit["a_only"], hit["b_only"]) == (a_only, b_only) and a_only == 0
    assert hit["test"] == "mcnemar" and hit["pvalue"] == pytest.approx(p)
    assert hit["delta"] == pytest.approx(better["hit"].mean() - table["hit"].mean())
    assert hit["ci_low"] > 0 and hit["verdict"] == "↑"
    sim = metrics["clip_score"]
    diff = better["sim"] - table["sim"]
    assert sim["test"] == "permutation"
    assert sim["delta"] == pytest.approx(diff.mean())
    assert sim["effect_size"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    reference = permutation_test((better["sim"], table["sim"]),
                                 lambda x, y, axis: np.mean(x - y, axis=axis),
                                 permutation_type="samples", n_resamples=1999, random_state=0)
    assert sim["pvalue"] == pytest.approx(reference.pvalue) and sim["verdict"] == "↑"
    rank = metrics["i2t_mean_rank"]
    assert rank["delta"] < 0 and rank["improved"] and rank["verdict"] == "↑"
    order = list(metrics)
    expected = multipletests([metrics[k]["pvalue"] for k in order], method="holm")[1]
    assert [metrics[k]["p_holm"] for k in order] == pytest.approx(list(expected))

    changed = document["comparisons"][0]["changed_rows"]
    assert changed["kind"] == "flips" and changed["metric"] == "i2t_recall_at_1"
    assert changed["gained_total"] == b_only and changed["lost_total"] == 0
    flipped = set(table.loc[(table["hit"] == 0) & (better["hit"] == 1), "item_id"])
    assert {row["item_id"] for row in changed["gained"]} <= flipped
    assert all(row["shape"] in ("circle", "square") for row in changed["gained"])

    code, out, _ = run_cli(a, b, "--tracking-uri", store, *FAST)
    assert code == 0
    assert "metric" in out and "delta [CI]" in out and "p (test)" in out
    line = next(x for x in out.splitlines() if x.startswith("i2t_recall_at_1"))
    assert "(mcnemar)" in line and line.rstrip().endswith("↑")
    assert f"{b_only} better, 0 worse in B" in out


def test_a_tiny_noisy_difference_is_not_significant(prefect_harness, store):
    table = base_table(seed=3)
    jittered = noisy(table)
    a = log_run(store, "evals", "run-1", table)
    b = log_run(store, "evals", "run-2", jittered)
    code, out, err = run_cli(a, b, "--tracking-uri", store, "--json", *FAST)
    assert code == 0, err
    metrics = by_metric(json.loads(out)["comparisons"][0])
    hit = metrics["i2t_recall_at_1"]
    a_only, b_only, p = mcnemar_reference(table, jittered)
    assert a_only and b_only and hit["pvalue"] == pytest.approx(p)
    for metric in metrics.values():
        assert metric["pvalue"] > 0.05 and metric["verdict"] == "="
        assert metric["ci_low"] < 0 < metric["ci_high"] or metric["delta"] == 0


def test_experiment_selector_with_filter_compares_the_first_with_each_other_run(
        prefect_harness, store):
    table = base_table()
    a = log_run(store, "sweep", "step-100", table, tags={"variant": "x"})
    log_run(store, "sweep", "other", table, tags={"variant": "y"})
    c = log_run(store, "sweep", "step-200", improved(table), tags={"variant": "x"})
    d = log_run(store, "sweep", "step-300", worse(table), tags={"variant": "x"})
    code, out, err = run_cli("experiment:sweep", "--filter", "tags.variant = 'x'",
                             "--tracking-uri", store, "--json", *FAST)
    assert code == 0, err
    document = json.loads(out)
    assert document["baseline"]["run_id"] == a
    assert [c["candidate"]["run_id"] for c in document["comparisons"]] == [c, d]
    verdicts = [by_metric(x)["i2t_recall_at_1"]["verdict"] for x in document["comparisons"]]
    assert verdicts == ["↑", "↓"]
    run = MlflowClient(tracking_uri=store).get_run(document["mlflow_run_id"])
    assert run.data.tags["bifocal.compared_runs"] == f"{a},{c},{d}"
    history = MlflowClient(tracking_uri=store).get_metric_history(
        run.info.run_id, "delta.i2t_recall_at_1")
    assert [m.step for m in history] == [0, 1] and history[1].value < 0 < history[0].value


def test_different_datasets_are_refused_unless_forced(prefect_harness, store):
    table = base_table()
    other = improved(table).iloc[100:].reset_index(drop=True)  # 300 shared rows
    a = log_run(store, "evals", "on-v1", table, dataset="a" * 64)
    b = log_run(store, "evals", "on-v2", other, dataset="b" * 64)
    code, out, err = run_cli(a, b, "--tracking-uri", store, *FAST)
    assert code == 2 and out == ""
    assert "not evaluated on the same dataset" in err and "--force" in err
    assert "300 rows both runs scored" in err

    code, out, err = run_cli(a, b, "--tracking-uri", store, "--force", "--json", *FAST)
    assert code == 0, err
    (comparison,) = json.loads(out)["comparisons"]
    assert comparison["forced"] and not comparison["same_dataset"]
    assert comparison["rows"] == {"baseline_scored": 400, "candidate_scored": 300,
                                  "compared": 300}
    assert any("forced: compared only the 300 rows" in note for note in comparison["notes"])
    hit = by_metric(comparison)["i2t_recall_at_1"]
    _, b_only, p = mcnemar_reference(table.iloc[100:].reset_index(drop=True), other)
    assert hit["b_only"] == b_only and hit["pvalue"] == pytest.approx(p)
    code, out, _ = run_cli(a, b, "--tracking-uri", store, "--force", *FAST)
    assert "note: dataset fingerprints differ" in out


def test_gate_failure_exits_3_naming_metric_delta_ci_and_p(prefect_harness, store):
    table = base_table()
    regressed = worse(table)
    a = log_run(store, "evals", "champion", table)
    b = log_run(store, "evals", "candidate", regressed)
    code, out, err = run_cli(a, b, "--tracking-uri", store, "--gate",
                             "i2t_recall_at_1:0.01", "--gate", "clip_score:0:0.01",
                             "--json", *FAST)
    assert code == 3
    document = json.loads(out)
    (gate,) = document["gates"]
    rules = {r["metric"]: r for r in gate["rules"]}
    hit = by_metric(document["comparisons"][0])["i2t_recall_at_1"]
    a_only, b_only, p = mcnemar_reference(table, regressed)
    assert rules["i2t_recall_at_1"]["pvalue"] == pytest.approx(p) and b_only == 0
    assert not rules["i2t_recall_at_1"]["held"] and rules["clip_score"]["held"]
    # Holm over the gate's two rules (not over every compared metric)
    expected = multipletests([p, rules["clip_score"]["pvalue"]], method="holm")[1]
    assert rules["i2t_recall_at_1"]["p_holm"] == pytest.approx(expected[0])
    assert "gate failed" in err and "i2t_recall_at_1" in err
    assert f"{hit['delta']:+.4f}" in err
    assert f"[{hit['ci_low']:+.4f}, {hit['ci_high']:+.4f}]" in err
    assert f"p {p:.1e}" in err and "clip_score" not in err
    run = MlflowClient(tracking_uri=store).get_run(document["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["bifocal.gate"] == "failed"

    code, out, err = run_cli(a, b, "--tracking-uri", store, "--gate",
                             "i2t_recall_at_1:0.5", *FAST)
    assert code == 0, err
    assert "gate passed" in out and "within the allowed 0.5000" in out


def test_unknown_runs_and_bad_options_are_clear_errors(prefect_harness, store):
    a = log_run(store, "evals", "only", base_table())
    code, _, err = run_cli(a, "0" * 32, "--tracking-uri", store)
    assert code == 2 and f"run {'0' * 32!r} not found" in err
    code, _, err = run_cli(a, "--tracking-uri", store)
    assert code == 2 and "at least two runs" in err
    code, _, err = run_cli(a, a, "--gate", "i2t_recall_at_1", "--tracking-uri", store)
    assert code == 2 and "METRIC:MAX_DROP[:ALPHA]" in err
    code, _, err = run_cli("experiment:nope", "--tracking-uri", store)
    assert code == 2 and "no MLflow experiment named 'nope'" in err


# ---- plain logic --------------------------------------------------------------------------------


def test_metrics_only_one_run_has_are_listed_as_not_compared():
    from tasks.comparison import RunData, compare_runs
    from tasks.stats.bootstrap import BootstrapSettings

    table = base_table()
    a_report = report_for(table, "a", "e", "d" * 64, "m1", "/m")
    b_report = report_for(table, "b", "e", "d" * 64, "m2", "/m")
    a_report["estimates"]["only_a"] = mean("sim").to_json()
    b_report["estimates"]["only_b"] = mean("sim").to_json()
    b_report["estimates"]["no_column"] = mean("missing").to_json()
    a_report["estimates"]["no_column"] = mean("missing").to_json()
    b_report["estimates"]["clip_score"] = Estimate("median", ("sim",)).to_json()
    a = RunData("a" * 32, "a", "0", a_report, table)
    b = RunData("b" * 32, "b", "0", b_report, table.copy())
    pair = compare_runs(a, b, BootstrapSettings(resamples=100), permutations=99)
    assert [m.metric for m in pair.metrics] == ["i2t_recall_at_1", "i2t_mean_rank"]
    assert pair.not_compared == {
        "clip_score": "computed differently (mean(sim) vs median(sim))",
        "only_a": "only the baseline run has it", "only_b": "only the candidate run has it",
        "no_column": "per-sample column(s) missing: missing"}
    document = pair.to_json()
    assert document["not_compared"] == pair.not_compared
    assert document["same_dataset"] and not document["forced"]
