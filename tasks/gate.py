"""The regression gate and promotion (plain logic, no Prefect).

A candidate run is compared with a baseline run (``tasks.comparison``). Each rule names a
metric, an allowed drop (absolute ``max_drop``, or ``max_relative_drop`` of the baseline value;
the larger allowance applies) and ``alpha``. A rule fails when the metric drops by more than
allowed (a drop is a decrease, or an increase where lower is better) AND the drop is
significant: its p-value, Holm-adjusted over the gate's rules, is below ``alpha``. Without
rules the task's headline metric (report.json ``headline``) may not drop at all (max_drop 0).
The gate passes when every rule holds. On a pass the candidate's model can be registered as a
new model version (linked to the run) and an alias moved to it; on a fail nothing moves.

The module imports the comparison machinery lazily, so ``GateFailed`` is cheap to import.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.config import EvalConfig, GateConfig, GateRule, PromoteConfig

if TYPE_CHECKING:
    from tasks.comparison import PairComparison, RunData

GATE_TAG = "bifocal.gate"


class GateFailed(RuntimeError):
    """A gate rule failed. The message names each regressed metric with its delta, CI and
    p-value; ``result`` holds the gate result (or the flow's result) when known."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class RuleOutcome:
    metric: str
    max_drop: float
    max_relative_drop: float | None
    alpha: float
    allowed_drop: float
    held: bool
    reason: str
    higher_is_better: bool | None = None
    a: float | None = None
    b: float | None = None
    delta: float | None = None
    drop: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    pvalue: float | None = None
    p_holm: float | None = None
    test: str | None = None


@dataclass
class GateResult:
    passed: bool
    candidate_run: str
    baseline_selector: str
    baseline_run: str | None
    rules: list[RuleOutcome]
    reason: str
    level: float = 0.95
    comparison: dict[str, Any] | None = None
    promoted: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    def failures(self) -> list[RuleOutcome]:
        return [rule for rule in self.rules if not rule.held]

    def message(self) -> str:
        """What failed: every regressed metric with delta, CI and p-value."""
        if self.passed:
            return f"gate passed ({self.reason})"
        head = f"gate failed for run {self.candidate_run}"
        if self.baseline_run:
            head += f" against baseline {self.baseline_run}"
        failed = self.failures()
        if not failed:
            return f"{head}: {self.reason}"
        return f"{head}: " + "; ".join(describe_rule(rule, self.level) for rule in failed)

    def to_json(self) -> dict[str, Any]:
        from tasks.comparison import clean_json

        return clean_json(asdict(self) | {"status": self.status, "message": self.message()})


def describe_rule(rule: RuleOutcome, level: float = 0.95) -> str:
    if rule.delta is None:
        return f"{rule.metric}: {rule.reason}"
    return (f"{rule.metric} {_signed(rule.delta)} (B - A; {round(100 * level, 1):g}% CI "
            f"[{_signed(rule.ci_low)}, {_signed(rule.ci_high)}], p {_p(rule.pvalue)}, "
            f"p_holm {_p(rule.p_holm)} < alpha {rule.alpha:g}; allowed drop "
            f"{rule.allowed_drop:.4f})")


def _signed(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.4f}"


def _p(value: float | None) -> str:
    from tasks.comparison import format_p

    return format_p(value)


# ---- rules ----------------------------------------------------------------------------------


def default_rules(headline: str | None) -> list[GateRule]:
    if not headline:
        raise ValueError("the gate has no rules and the run's report.json names no headline "
                         "metric: give gate.rules")
    return [GateRule(metric=headline)]


def parse_rule(text: str) -> GateRule:
    """``METRIC:MAX_DROP[:ALPHA]`` (the command line's ``--gate``)."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise ValueError(f"--gate {text!r} must look like METRIC:MAX_DROP[:ALPHA]")
    try:
        numbers = [float(p) for p in parts[1:]]
    except ValueError:
        raise ValueError(f"--gate {text!r}: MAX_DROP and ALPHA must be numbers") from None
    values: dict[str, Any] = {"metric": parts[0], "max_drop": numbers[0]}
    if len(numbers) == 2:
        values["alpha"] = numbers[1]
    try:
        return GateRule(**values)
    except Exception as error:  # pydantic's ValidationError names the field
        raise ValueError(f"--gate {text!r}: {error}") from None


def evaluate_rules(pair: PairComparison, rules: list[GateRule]) -> list[RuleOutcome]:
    """Each rule against the comparison; p-values Holm-adjusted over the rules' metrics."""
    from tasks.stats.paired import holm

    tested: dict[str, float] = {}
    for rule in rules:
        result = pair.metric(rule.metric)
        if result is not None and math.isfinite(result.pvalue):
            tested[rule.metric] = result.pvalue
    adjusted = (dict(zip(tested, holm(list(tested.values())).tolist(), strict=True))
                if tested else {})
    return [_outcome(rule, pair, adjusted.get(rule.metric)) for rule in rules]


def _outcome(rule: GateRule, pair: PairComparison, p_holm: float | None) -> RuleOutcome:
    result = pair.metric(rule.metric)
    allowed = rule.max_drop
    if result is None:
        reason = pair.not_compared.get(rule.metric, "not in both runs' estimates")
        return RuleOutcome(rule.metric, rule.max_drop, rule.max_relative_drop, rule.alpha,
                           allowed, False, f"cannot be compared: {reason}")
    if rule.max_relative_drop is not None and math.isfinite(result.a):
        allowed = max(allowed, rule.max_relative_drop * abs(result.a))
    drop = -result.delta if result.higher_is_better else result.delta
    exceeds = drop > allowed + 1e-12
    significant = p_holm is not None and p_holm < rule.alpha
    held = not (exceeds and significant)
    if drop <= 0:
        reason = "no drop" if drop == 0 else f"improved by {-drop:.4f}"
    elif not exceeds:
        reason = f"dropped {drop:.4f}, within the allowed {allowed:.4f}"
    elif p_holm is None:
        reason = f"dropped {drop:.4f} > allowed {allowed:.4f}, but no test was possible"
    elif not significant:
        reason = (f"dropped {drop:.4f} > allowed {allowed:.4f}, but not significant "
                  f"(p_holm {_p(p_holm)} >= alpha {rule.alpha:g})")
    else:
        reason = (f"dropped {drop:.4f} > allowed {allowed:.4f}, significant "
                  f"(p_holm {_p(p_holm)} < alpha {rule.alpha:g})")
    return RuleOutcome(rule.metric, rule.max_drop, rule.max_relative_drop, rule.alpha, allowed,
                       held, reason, result.higher_is_better, result.a, result.b, result.delta,
                       drop, result.ci_low, result.ci_high, result.pvalue, p_holm, result.test)


def check_rules(pair: PairComparison, rules: list[GateRule], baseline_selector: str,
                level: float = 0.95) -> GateResult:
    """The gate's decision on one comparison (A = baseline, B = candidate)."""
    outcomes = evaluate_rules(pair, rules)
    failed = [o.metric for o in outcomes if not o.held]
    reason = (f"{len(failed)} of {len(outcomes)} rule(s) failed: {', '.join(failed)}" if failed
              else f"all {len(outcomes)} rule(s) held")
    return GateResult(not failed, pair.candidate["run_id"], baseline_selector,
                      pair.baseline["run_id"], outcomes, reason, level, pair.to_json(),
                      notes=list(pair.notes))


def raise_if_failed(results: list[GateResult], result: Any = None) -> None:
    failed = [r for r in results if not r.passed]
    if failed:
        raise GateFailed("; ".join(r.message() for r in failed), result)


# ---- baseline ---------------------------------------------------------------------------------


def resolve_baseline(uri: str, gate: GateConfig, candidate: RunData, metric: str
                     ) -> tuple[str | None, str]:
    """(baseline run id or None when there is none yet, how it was chosen)."""
    from tasks.comparison import (
        EXPERIMENT_PREFIX,
        MODELS_PREFIX,
        ComparisonError,
        model_version,
        search_evaluation_runs,
    )

    selector = gate.baseline.strip()
    if selector.startswith(MODELS_PREFIX):
        version = model_version(uri, selector)
        if version is None:
            return None, f"{selector} is not set yet"
        if not version.run_id:
            raise ComparisonError(f"{selector}: model version {version.version} is linked to "
                                  "no run")
        return version.run_id, f"{selector} (version {version.version})"
    if selector.startswith(EXPERIMENT_PREFIX):
        runs = [run for run in search_evaluation_runs(uri, selector[len(EXPERIMENT_PREFIX):],
                                                      gate.filter)
                if run.info.run_id != candidate.run_id
                and run.data.tags.get("bifocal.dataset_fingerprint")
                == candidate.dataset_fingerprint and metric in run.data.metrics]
        if not runs:
            return None, f"no finished run on the same dataset with {metric} in {selector}"
        higher = candidate.higher_is_better.get(metric, not metric.endswith("_rank"))
        best = (max if higher else min)(runs, key=lambda run: run.data.metrics[metric])
        return best.info.run_id, f"best {metric} in {selector} ({best.info.run_name})"
    if selector == candidate.run_id:
        raise ComparisonError("the gate's baseline is the evaluated run itself")
    return selector, "run id"


# ---- the whole gate ---------------------------------------------------------------------------


def gate_runs(uri: str, gate: GateConfig, candidate: RunData, settings: Any,
              permutations: int) -> GateResult:
    """Resolve the baseline, compare, decide (no side effects)."""
    from tasks.comparison import compare_runs, load_run

    level = settings.level
    baseline_id: str | None = None
    try:
        rules = gate.rules or default_rules(candidate.headline)
        baseline_id, how = resolve_baseline(uri, gate, candidate, rules[0].metric)
        if baseline_id is None:
            return GateResult(True, candidate.run_id, gate.baseline, None, [],
                              f"no baseline: {how}; nothing to compare", level)
        baseline = load_run(uri, baseline_id)
        pair = compare_runs(baseline, candidate, settings, permutations,
                            only=[r.metric for r in rules])
    except ValueError as error:  # fail closed: a gate that cannot compare does not pass
        return GateResult(False, candidate.run_id, gate.baseline, baseline_id, [],
                          f"cannot compare with the baseline: {error}", level)
    result = check_rules(pair, rules, gate.baseline, level)
    result.notes.insert(0, f"baseline: {how}")
    return result


def run_gate(config: EvalConfig, uri: str, run_id: str,
             permutations: int | None = None) -> GateResult:
    """The gate of an evaluation that just finished: decide, record it on the run (gate.json,
    gate.md, tag ``bifocal.gate``) and promote on a pass. Never raises for a failed gate."""
    from tasks.comparison import DEFAULT_PERMUTATIONS, load_run
    from tasks.stats.bootstrap import BootstrapSettings

    if config.gate is None:
        raise ValueError("the config has no gate section")
    statistics = config.statistics
    settings = BootstrapSettings(statistics.bootstrap, statistics.level, statistics.method,
                                 statistics.seed)
    candidate = load_run(uri, run_id)
    result = gate_runs(uri, config.gate, candidate, settings,
                       permutations or DEFAULT_PERMUTATIONS)
    if result.passed and config.promote is not None:
        result.promoted = promote(uri, config.promote, model_source(config.model.path), run_id,
                                  {GATE_TAG: "passed",
                                   "bifocal.baseline_run": result.baseline_run or "none",
                                   "bifocal.dataset_fingerprint":
                                       candidate.dataset_fingerprint or ""})
    record(uri, run_id, result)
    return result


def record(uri: str, run_id: str, result: GateResult) -> None:
    """gate.json and gate.md as artifacts, the decision as tags."""
    from tasks.tracking import mlflow_log as ml

    tags = {GATE_TAG: result.status, "bifocal.gate_baseline": result.baseline_run or "none"}
    if result.promoted:
        tags["bifocal.model_version"] = (f"{result.promoted['model_name']}/"
                                         f"{result.promoted['version']}")
    with tempfile.TemporaryDirectory(prefix="bifocal-gate-") as folder:
        (Path(folder) / "gate.json").write_text(json.dumps(result.to_json(), indent=2))
        (Path(folder) / "gate.md").write_text(gate_markdown(result))
        ml.log_artifacts(uri, run_id, Path(folder))
    ml.set_tags(uri, run_id, tags)


def gate_markdown(result: GateResult) -> str:
    lines = [f"# Gate {result.status}", "", f"Candidate run `{result.candidate_run}`; baseline "
             f"`{result.baseline_run or 'none'}` ({result.baseline_selector}).", "",
             result.reason, ""]
    lines += [f"- {note}" for note in result.notes]
    if result.rules:
        lines += ["", "| rule | delta [CI] | p | p_holm | allowed drop | held | why |",
                  "|---|---|---|---|---|---|---|"]
        for rule in result.rules:
            lines.append(f"| {rule.metric} | {_signed(rule.delta)} [{_signed(rule.ci_low)}, "
                         f"{_signed(rule.ci_high)}] | {_p(rule.pvalue)} | {_p(rule.p_holm)} | "
                         f"{rule.allowed_drop:.4f} | {'yes' if rule.held else '**no**'} | "
                         f"{rule.reason} |")
    if result.promoted:
        p = result.promoted
        lines += ["", f"Promoted: `{p['model_name']}` version {p['version']} is now "
                  f"`@{p['alias']}`."]
    return "\n".join(lines) + "\n"


def text_lines(result: GateResult) -> list[str]:
    """The gate's decision for stdout."""
    lines = [f"gate {result.status} (candidate {result.candidate_run}, baseline "
             f"{result.baseline_run or 'none'}): {result.reason}"]
    for rule in result.rules:
        lines.append(f"  {'held  ' if rule.held else 'FAILED'} {rule.metric}: "
                     f"delta {_signed(rule.delta)} [{_signed(rule.ci_low)}, "
                     f"{_signed(rule.ci_high)}], p {_p(rule.pvalue)}, p_holm {_p(rule.p_holm)} "
                     f"(Holm over the gate's rules) — {rule.reason}")
    if result.promoted:
        p = result.promoted
        lines.append(f"  promoted: {p['model_name']} version {p['version']} -> @{p['alias']}")
    return lines


# ---- promotion --------------------------------------------------------------------------------


def model_source(path: str) -> str:
    """The evaluated model as a model version source: an absolute folder path when it exists
    locally, else the path or URI as configured (a Hugging Face id, s3://...)."""
    local = Path(path).expanduser()
    return str(local.resolve()) if "://" not in path and local.exists() else path


def pointer_source(uri: str, run_id: str, path: str) -> str:
    """A tracking server refuses a local folder as a model version source (it must lie in the
    run's artifacts): log ``model/bifocal-model.json`` naming the folder on the run and use
    ``runs:/<run>/model`` instead — the weights stay where they are."""
    import json
    import tempfile

    from tasks.tracking import mlflow_log as ml

    with tempfile.TemporaryDirectory(prefix="bifocal-model-") as folder:
        (Path(folder) / "bifocal-model.json").write_text(json.dumps({"path": path}))
        ml.log_artifacts(uri, run_id, Path(folder), "model")
    return f"runs:/{run_id}/model"


def promote(uri: str, settings: PromoteConfig, source: str, run_id: str,
            tags: dict[str, str] | None = None) -> dict[str, Any]:
    """A new version of ``settings.model_name`` (created if missing) from ``source``, linked to
    ``run_id``, and ``settings.alias`` moved to it. On a tracking server a local folder is
    registered through a pointer in the run's artifacts (``pointer_source``)."""
    from tasks.comparison import registry_client

    client = registry_client(uri)
    try:
        client.get_registered_model(settings.model_name)
    except Exception as error:
        if getattr(error, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(settings.model_name)
        except Exception as again:  # created meanwhile by another process
            if getattr(again, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
    tags = dict(tags or {})
    if "://" not in source and uri.startswith(("http://", "https://")):
        tags["bifocal.model_path"] = source
        source = pointer_source(uri, run_id, source)
    version = client.create_model_version(settings.model_name, source, run_id=run_id,
                                          tags=tags)
    client.set_registered_model_alias(settings.model_name, settings.alias, version.version)
    return {"model_name": settings.model_name, "version": str(version.version),
            "alias": settings.alias, "source": source, "run_id": run_id}
