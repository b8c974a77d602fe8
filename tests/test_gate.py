"""The regression gate: rule decisions, baselines, promotion in the MLflow model registry, and
the evaluate flow ending Failed while its MLflow run stays FINISHED. Numbers are checked
against scipy / statsmodels / numpy."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

from tasks.comparison import RunData, compare_runs
from tasks.config import EvalConfig, GateRule
from tasks.config_io import ConfigError, build_config
from tasks.gate import (
    GateFailed,
    check_rules,
    default_rules,
    model_source,
    parse_rule,
    raise_if_failed,
    run_gate,
)
from tasks.stats.bootstrap import BootstrapSettings
from tests.flows.test_compare import (
    attach_report,
    base_table,
    improved,
    log_run,
    noisy,
    report_for,
    worse,
)

SETTINGS = BootstrapSettings(resamples=300, seed=0)
PERMUTATIONS = 1999


def run_main(*args: str) -> tuple[int, str, str]:
    """``bifocal ...`` in this process, output into buffers that stay open (see run_cli)."""
    from flows.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def in_memory(run_id: str, table: pd.DataFrame, dataset: str = "d" * 64) -> RunData:
    return RunData(run_id, run_id, "0", report_for(table, run_id, "e", dataset, run_id, "/m"),
                   table)


def gate_on(baseline: pd.DataFrame, candidate: pd.DataFrame, rules: list[GateRule]):
    pair = compare_runs(in_memory("base", baseline), in_memory("cand", candidate), SETTINGS,
                        PERMUTATIONS)
    return check_rules(pair, rules, "base")


def hits_drop(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, float]:
    a_only = int(((a["hit"] == 1) & (b["hit"] == 0)).sum())
    b_only = int(((a["hit"] == 0) & (b["hit"] == 1)).sum())
    return float(a["hit"].mean() - b["hit"].mean()), binomtest(b_only, a_only + b_only).pvalue


# ---- config -----------------------------------------------------------------------------------

BASE = {"model": {"path": "models/clip"}, "dataset": {"path": "d.jsonl"}}


def test_gate_and_promote_sections_are_strict_and_described_for_the_ui():
    config = build_config(BASE | {
        "gate": {"baseline": "models:/clip@champion",
                 "rules": [{"metric": "i2t_recall_at_1", "max_drop": 0.01}]},
        "promote": {"model_name": "clip"}})
    assert config.gate is not None and config.gate.rules[0].alpha == 0.05
    assert config.gate.rules[0].max_relative_drop is None
    assert config.promote is not None and config.promote.alias == "champion"
    assert build_config(BASE).gate is None and build_config(BASE).promote is None
    with pytest.raises(ConfigError, match="gate.rules.0.maxdrop: Extra inputs"):
        build_config(BASE | {"gate": {"baseline": "x", "rules": [{"metric": "m",
                                                                   "maxdrop": 1}]}})
    with pytest.raises(ConfigError, match="gate.rules.0.max_drop: Input should be greater"):
        build_config(BASE | {"gate": {"baseline": "x", "rules": [{"metric": "m",
                                                                   "max_drop": -1}]}})
    with pytest.raises(ConfigError, match="promote.alias: MLflow reserves"):
        build_config(BASE | {"promote": {"model_name": "clip", "alias": "v3"}})
    with pytest.raises(ConfigError, match="promote.model_name: Field required"):
        build_config(BASE | {"promote": {"alias": "prod"}})
    schema = EvalConfig.model_json_schema()
    for name in ("GateConfig", "GateRule", "PromoteConfig"):
        assert all("description" in f for f in schema["$defs"][name]["properties"].values())
    assert "description" in schema["properties"]["gate"]
    assert "description" in schema["properties"]["promote"]


def test_gate_rules_from_the_command_line():
    assert parse_rule("i2t_recall_at_1:0.01") == GateRule(metric="i2t_recall_at_1",
                                                          max_drop=0.01)
    assert parse_rule("cider:0:0.01").alpha == 0.01
    for bad in ("cider", "cider:x", "cider:0.1:2", ":0.1", "a:1:2:3"):
        with pytest.raises(ValueError, match="--gate"):
            parse_rule(bad)
    assert default_rules("cider") == [GateRule(metric="cider")]
    with pytest.raises(ValueError, match="headline"):
        default_rules(None)


# ---- decisions --------------------------------------------------------------------------------


def test_a_significant_drop_beyond_the_allowance_fails_and_names_the_numbers():
    table = base_table()
    regressed = worse(table)
    result = gate_on(table, regressed, [GateRule(metric="i2t_recall_at_1")])
    drop, p = hits_drop(table, regressed)
    assert not result.passed
    (rule,) = result.rules
    assert not rule.held and rule.drop == pytest.approx(drop) and drop > 0.1
    assert rule.pvalue == pytest.approx(p) and rule.p_holm == pytest.approx(p)
    assert rule.ci_high < 0 and rule.test == "mcnemar"
    message = result.message()
    assert "i2t_recall_at_1" in message and f"{-drop:+.4f}" in message
    assert f"95% CI [{rule.ci_low:+.4f}, {rule.ci_high:+.4f}]" in message
    assert f"p {p:.1e}" in message
    with pytest.raises(GateFailed, match="i2t_recall_at_1") as raised:
        raise_if_failed([result], {"x": 1})
    assert raised.value.result == {"x": 1}


def test_allowances_absolute_and_relative():
    table = base_table()
    regressed = worse(table)
    drop, _ = hits_drop(table, regressed)
    baseline = table["hit"].mean()
    held = gate_on(table, regressed, [GateRule(metric="i2t_recall_at_1", max_drop=drop + 0.01)])
    assert held.passed and "within the allowed" in held.rules[0].reason
    relative = (drop + 0.01) / baseline
    rule = GateRule(metric="i2t_recall_at_1", max_relative_drop=relative)
    outcome = gate_on(table, regressed, [rule]).rules[0]
    assert outcome.held and outcome.allowed_drop == pytest.approx(relative * baseline)
    too_tight = GateRule(metric="i2t_recall_at_1", max_drop=0.001,
                         max_relative_drop=(drop / 2) / baseline)
    outcome = gate_on(table, regressed, [too_tight]).rules[0]
    assert not outcome.held and outcome.allowed_drop == pytest.approx(drop / 2)


def test_direction_comes_from_higher_is_better():
    table = base_table()
    better = improved(table)  # ranks fall: an improvement for a lower-is-better metric
    result = gate_on(better, table, [GateRule(metric="i2t_mean_rank", max_drop=1.0)])
    (rule,) = result.rules
    assert rule.higher_is_better is False
    assert rule.drop == pytest.approx(table["rank"].mean() - better["rank"].mean())
    assert not rule.held
    assert gate_on(table, better, [GateRule(metric="i2t_mean_rank")]).passed


def test_a_noisy_drop_that_is_not_significant_holds():
    table = base_table(seed=3)
    jittered = noisy(table)
    result = gate_on(table, jittered, [GateRule(metric="i2t_recall_at_1"),
                                       GateRule(metric="clip_score")])
    rules = {r.metric: r for r in result.rules}
    drop, p = hits_drop(table, jittered)
    assert drop > 0 and rules["i2t_recall_at_1"].pvalue == pytest.approx(p)
    assert result.passed and "not significant" in rules["i2t_recall_at_1"].reason
    expected = multipletests([rules["i2t_recall_at_1"].pvalue, rules["clip_score"].pvalue],
                             method="holm")[1]
    assert [rules["i2t_recall_at_1"].p_holm, rules["clip_score"].p_holm] == \
        pytest.approx(list(expected))


def test_a_rule_on_a_metric_that_cannot_be_compared_fails_closed():
    table = base_table()
    result = gate_on(table, table, [GateRule(metric="i2t_recall_at_1"),
                                    GateRule(metric="cider")])
    rules = {r.metric: r for r in result.rules}
    assert rules["i2t_recall_at_1"].held and rules["i2t_recall_at_1"].reason == "no drop"
    assert not rules["cider"].held and "cannot be compared" in rules["cider"].reason
    assert not result.passed and "cider" in result.message()


# ---- baselines and promotion (MLflow registry on SQLite) ----------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def gated_config(tmp_path: Path, store: str, baseline: str, **gate) -> EvalConfig:
    model = tmp_path / "checkpoints" / "clip"
    model.mkdir(parents=True, exist_ok=True)
    # `bifocal run` checks the manifest before the flow starts (images are not opened there)
    (tmp_path / "d.jsonl").write_text('{"image": "a.png", "captions": ["x"]}\n')
    return build_config({
        "model": {"path": str(model)}, "dataset": {"path": str(tmp_path / "d.jsonl")},
        "tracking": {"tracking_uri": store, "experiment": "evals"},
        "statistics": {"bootstrap": 300},
        "gate": {"baseline": baseline, **gate}, "promote": {"model_name": "clip"},
    })


def artifact_json(store: str, run_id: str, path: str, folder: Path) -> dict:
    client = MlflowClient(tracking_uri=store)
    return json.loads(Path(client.download_artifacts(run_id, path, str(folder))).read_text())


def test_promotion_moves_the_alias_only_when_the_gate_passes(store, tmp_path):
    config = gated_config(tmp_path, store, "models:/clip@champion")
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    table = base_table()

    first = log_run(store, "evals", "first", table)
    result = run_gate(config, store, first, PERMUTATIONS)
    assert result.passed and result.baseline_run is None and "not set yet" in result.reason
    version = client.get_model_version_by_alias("clip", "champion")
    assert (str(version.version), version.run_id) == ("1", first)
    assert version.source == model_source(config.model.path) == config.model.path
    assert client.get_run(first).data.tags["bifocal.gate"] == "passed"
    assert client.get_run(first).data.tags["bifocal.model_version"] == "clip/1"

    regressed = log_run(store, "evals", "regressed", worse(table))
    result = run_gate(config, store, regressed, PERMUTATIONS)
    assert not result.passed and result.baseline_run == first and result.promoted is None
    assert str(client.get_model_version_by_alias("clip", "champion").version) == "1"
    assert len(client.search_model_versions("name = 'clip'")) == 1
    run = client.get_run(regressed)
    assert run.data.tags["bifocal.gate"] == "failed"
    assert run.data.tags["bifocal.gate_baseline"] == first
    recorded = artifact_json(store, regressed, "gate.json", tmp_path)
    assert recorded["status"] == "failed" and recorded["rules"][0]["metric"] == "i2t_recall_at_1"
    assert "i2t_recall_at_1" in recorded["message"]
    assert "gate.md" in {f.path for f in client.list_artifacts(regressed)}

    better = log_run(store, "evals", "better", improved(table))
    result = run_gate(config, store, better, PERMUTATIONS)
    assert result.passed and result.baseline_run == first
    assert "models:/clip@champion (version 1)" in result.notes[0]
    version = client.get_model_version_by_alias("clip", "champion")
    assert (str(version.version), version.run_id) == ("2", better)
    assert version.tags["bifocal.baseline_run"] == first
    # the next gate compares with the new champion
    again = log_run(store, "evals", "again", improved(table))
    assert run_gate(config, store, again, PERMUTATIONS).baseline_run == better


def test_experiment_baseline_is_the_best_comparable_run(store, tmp_path):
    table = base_table()
    best = log_run(store, "evals", "best", improved(table), tags={"variant": "x"})
    log_run(store, "evals", "plain", table, tags={"variant": "x"})
    log_run(store, "evals", "other-data", improved(improved(table, seed=5), seed=6),
            dataset="e" * 64, tags={"variant": "x"})  # higher recall, but another dataset
    log_run(store, "evals", "filtered-out", improved(improved(table, seed=7), seed=8),
            tags={"variant": "y"})
    candidate = log_run(store, "evals", "candidate", table, tags={"variant": "x"})
    config = gated_config(tmp_path, store, "experiment:evals",
                          filter="tags.variant = 'x'")
    result = run_gate(config, store, candidate, PERMUTATIONS)
    assert result.baseline_run == best and not result.passed
    assert "best i2t_recall_at_1 in experiment:evals (best)" in result.notes[0]
    # lower is better for ranks: the lowest mean rank wins
    rank_rule = config.model_copy(update={"gate": config.gate.model_copy(update={
        "rules": [GateRule(metric="i2t_mean_rank", max_drop=100)]})})
    assert run_gate(rank_rule, store, candidate, PERMUTATIONS).baseline_run == best
    # an experiment without a comparable run: nothing to compare, the gate passes
    lonely = gated_config(tmp_path, store, "experiment:evals", filter="tags.variant = 'z'")
    assert run_gate(lonely, store, candidate, PERMUTATIONS).passed


def test_a_baseline_that_cannot_be_compared_fails_the_gate(store, tmp_path):
    table = base_table()
    other = log_run(store, "evals", "other", table, dataset="e" * 64)
    candidate = log_run(store, "evals", "candidate", table)
    result = run_gate(gated_config(tmp_path, store, other), store, candidate, PERMUTATIONS)
    assert not result.passed and "not evaluated on the same dataset" in result.reason
    assert "not evaluated on the same dataset" in result.message()
    missing = run_gate(gated_config(tmp_path, store, "f" * 32), store, candidate, PERMUTATIONS)
    assert not missing.passed and "not found" in missing.reason
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    assert client.search_registered_models() == []


# ---- the evaluate flow ------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_failed_gate_fails_the_flow_but_not_the_evaluation_run(prefect_harness, store,
                                                                 tmp_path, monkeypatch):
    """run_stages is replaced by one that logs a report as the real one does and ends with the
    same gate call; the flow's own code (tracked run, raise after it) is real."""
    import flows.evaluate as evaluate_module
    from tasks.steps import gate_step

    table = base_table()
    champion = log_run(store, "evals", "champion", table)

    def stages(config, uri, run_id, run_name):
        attach_report(uri, run_id, worse(table), run_name, "evals")
        gate = gate_step(config, uri, run_id) if config.gate is not None else None
        return {"mlflow_run_id": run_id, "run_name": run_name, "tracking_uri": uri,
                "metrics": {"i2t_recall_at_1": 0.0}, "counts": {"items": 400}, "report": "-",
                "inference_cache": "miss", "warnings": [], "gate": gate}

    monkeypatch.setattr(evaluate_module, "run_stages", stages)
    config = gated_config(tmp_path, store, champion,
                          rules=[{"metric": "i2t_recall_at_1", "max_drop": 0.01}])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))

    code, out, err = run_main("run", str(path))
    assert code == 3
    assert "bifocal: gate failed for run" in err and "i2t_recall_at_1 -0." in err
    assert "95% CI [" in err and ", p " in err
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    (run,) = [r for r in client.search_runs([client.get_run(champion).info.experiment_id])
              if r.info.run_id != champion]
    assert run.info.status == "FINISHED" and run.data.tags["bifocal.gate"] == "failed"
    assert "bifocal.error" not in run.data.tags
    assert f"MLflow run: {run.info.run_id}" in out and "gate failed" in out
    assert client.search_registered_models() == []

    with pytest.raises(GateFailed) as raised:  # the flow itself ends Failed
        evaluate_module.evaluate(config)
    assert "i2t_recall_at_1" in str(raised.value)
    assert isinstance(raised.value.result, dict) and raised.value.result["gate"]["rules"]


@pytest.mark.e2e
def test_a_passed_gate_promotes_from_the_flow(prefect_harness, store, tmp_path, monkeypatch):
    import flows.evaluate as evaluate_module
    from tasks.steps import gate_step

    table = base_table()
    champion = log_run(store, "evals", "champion", table)

    def stages(config, uri, run_id, run_name):
        attach_report(uri, run_id, improved(table), run_name, "evals")
        return {"mlflow_run_id": run_id, "run_name": run_name, "tracking_uri": uri,
                "metrics": {}, "counts": {}, "report": "-", "inference_cache": "miss",
                "warnings": [], "gate": gate_step(config, uri, run_id)}

    monkeypatch.setattr(evaluate_module, "run_stages", stages)
    config = gated_config(tmp_path, store, champion)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    code, out, _ = run_main("run", str(path))
    assert code == 0
    assert "gate passed" in out and "promoted: clip version 1 -> @champion" in out
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    version = client.get_model_version_by_alias("clip", "champion")
    assert version.run_id != champion and client.get_run(version.run_id).info.status == \
        "FINISHED"


@pytest.mark.e2e
def test_the_real_evaluate_flow_gates_and_promotes(prefect_harness, tmp_path, tiny_clip_dir):
    """Two real evaluations of the same checkpoint: the first has no champion yet, the second
    compares with it (no drop) and becomes the new champion."""
    from flows.evaluate import evaluate
    from tests.flows.test_evaluate import make_config
    from tests.helpers import write_dataset

    manifest = write_dataset(tmp_path / "ds", n=10)
    config = make_config(tmp_path, tiny_clip_dir, manifest,
                         gate={"baseline": "models:/tiny-clip@champion"},
                         promote={"model_name": "tiny-clip"},
                         statistics={"bootstrap": 200})
    first = evaluate(config)
    assert first["gate"]["status"] == "passed" and first["gate"]["baseline_run"] is None
    second = evaluate(config)
    gate = second["gate"]
    assert gate["status"] == "passed" and gate["baseline_run"] == first["mlflow_run_id"]
    (rule,) = gate["rules"]
    assert rule["metric"] == "i2t_recall_at_1" and rule["delta"] == 0
    client = MlflowClient(tracking_uri=config.tracking.tracking_uri,
                          registry_uri=config.tracking.tracking_uri)
    version = client.get_model_version_by_alias("tiny-clip", "champion")
    assert (str(version.version), version.run_id) == ("2", second["mlflow_run_id"])
    assert version.source == str(Path(tiny_clip_dir).resolve())
    run = client.get_run(second["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["bifocal.gate"] == "passed"
    recorded = artifact_json(config.tracking.tracking_uri, run.info.run_id, "gate.json",
                             tmp_path)
    assert recorded["comparison"]["rows"]["compared"] == 10
    assert np.isclose(recorded["rules"][0]["a"], first["metrics"]["i2t_recall_at_1"])
