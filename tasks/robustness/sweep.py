"""The robustness sweep: every metric of the run's task again on each variant of its dataset.

For each (corruption, severity) and each text perturbation of ``config.robustness``, a variant
dataset is built (``tasks.robustness.variants``) and the task kind's own ``infer`` and ``score``
run on it, exactly as for the clean run: the same shards and inference cache (variants are keyed
by their image digests and texts, so a rerun loads every variant from the cache), the same
metrics with the same bootstrap intervals. The model is loaded at most once for the whole sweep
(on the first cache miss), with any preprocessing fitted to the data (torch_module's dataset
mean/std) fitted on the clean images: the model does not adapt to the corruption. Variant
inference is keyed with the clean run's model fingerprint for the same reason.

Summaries per corruption c over the severities S run, per metric m (the clean run's estimated
metrics):

- ``mean``: the mean of m over S;
- ``relative_drop``: (clean - mean) / |clean| for higher-is-better metrics, (mean - clean) /
  |clean| for lower-is-better ones: the share of the clean value lost, positive when worse;
- ``ce`` (corruption error normalised by the clean error, ImageNet-C's CE with the model's own
  clean error as the baseline): mean over S of E(m_s) / E(m_clean), where the error E is 1 - m
  for higher-is-better metrics on [0, 1] (accuracy, recall@k, VQA accuracy, BLEU, ...), m itself
  for lower-is-better metrics (ranks), and undefined for higher-is-better metrics without an
  upper bound of 1 (CIDEr, CLIPScore); 1 means as bad as clean, 2 twice the clean error.
  ``all`` gives the same over every corruption: the mean of the corruption means, its relative
  drop, and the mean CE (mCE).

MLflow keys: ``robust.<corruption>.<severity>.<metric>`` (with ``_ci_low`` / ``_ci_high``),
``robust.<corruption>.{mean,relative_drop,ce}.<metric>``, ``robust.all.{mean,relative_drop,
ce}.<metric>``, ``robust.text.<perturbation>.<metric>`` (with its interval) and
``robust.text.<perturbation>.relative_drop.<metric>``; the adversarial attacks add their
``adv.<attack>.eps_<e>.<metric>`` keys.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tasks.config import EvalConfig, RobustnessConfig
from tasks.data.base import DatasetRef
from tasks.io import write_parquet
from tasks.kinds import InferenceRef, Scores, get_task_kind, kind_code_version
from tasks.kinds.sharded import Inference
from tasks.models import load_adapter
from tasks.models.base import ADAPTERS, Adapter
from tasks.robustness.variants import (
    ImageCounts,
    Variant,
    describe,
    plan_variants,
    text_skip_reason,
    variant_data,
)
from tasks.stats.estimates import is_interval_key

F = TypeVar("F")
logger = logging.getLogger(__name__)

# higher-is-better metrics whose values are not on [0, 1]: no error (1 - m), hence no CE
UNBOUNDED = frozenset({"cider", "clip_score", "ref_clip_score", "semantic_similarity"})
DEFINITIONS = {
    "mean": "mean of the metric over the severities",
    "relative_drop": "(clean - mean) / |clean| for higher-is-better metrics, (mean - clean) / "
                     "|clean| for lower-is-better ones: positive when worse than clean",
    "ce": "mean over the severities of error / clean error, error = 1 - metric for "
          "higher-is-better metrics on [0, 1], the metric itself for lower-is-better ones "
          "(none for unbounded metrics such as CIDEr)",
    "all": "over every corruption: the mean of the corruption means, its relative drop, and "
           "the mean CE (mCE)",
}


@dataclass
class RobustnessResult:
    metrics: dict[str, float]  # MLflow keys robust.* and adv.*
    section: dict[str, Any]  # report.json's "robustness"
    warnings: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # report files: name -> path
    tables: dict[str, str] = field(default_factory=dict)  # per-sample tables: name -> parquet


class SharedModel:
    """The run's adapter for every variant: loaded once, on first use, with preprocessing that
    depends on the data fitted on the clean images."""

    def __init__(self, dataset: DatasetRef, config: EvalConfig, fingerprint: str) -> None:
        self.dataset = dataset
        self.config = config
        self.fingerprint = fingerprint
        self.loads = 0
        self._adapter: Adapter | None = None

    def adapter(self) -> Adapter:
        if self._adapter is None:
            paths = list(self.dataset.load_items()["image_path"])
            self._adapter = load_adapter(self.config.model, paths)
            self.loads += 1
        return self._adapter


class VariantInference(Inference):
    """``Inference`` over a variant that borrows the sweep's ``SharedModel`` and keys its cache
    with the clean run's model fingerprint."""

    def __init__(self, dataset: DatasetRef, config: EvalConfig, cache_root: Path,
                 code_version: str, shared: SharedModel) -> None:
        super().__init__(dataset, config, cache_root, code_version)
        self.shared = shared
        self._model_fingerprint = shared.fingerprint

    def adapter(self, family: type[F]) -> F:
        if self._adapter is None and issubclass(ADAPTERS.get(self.config.model.kind), family):
            self._adapter = self.shared.adapter()
        return super().adapter(family)


@dataclass
class Outcome:
    """One variant's evaluation."""

    variant: Variant
    scores: Scores
    cache: str  # hit / partial / miss
    images: ImageCounts | None
    seconds: float


def evaluate_variant(variant: Variant, dataset: DatasetRef, config: EvalConfig,
                     shared: SharedModel, run_dir: Path, cache_root: Path) -> Outcome:
    """Build the variant and run the task kind's inference and scoring on it."""
    started = time.perf_counter()
    folder = run_dir / "robustness" / variant.label
    data = variant_data(variant, dataset, config, folder / "data", cache_root)
    kind = get_task_kind(config.task.value)
    run = VariantInference(data.dataset, data.config, cache_root / "inference",
                           kind_code_version(kind), shared)
    inference = kind.infer(run)
    scores = kind.score(data.dataset, inference, data.config, folder / "scores")
    return Outcome(variant, scores, inference.cache_state, data.images,
                   round(time.perf_counter() - started, 3))


def run_sweep(dataset: DatasetRef, inference: InferenceRef, scores: Scores, config: EvalConfig,
              run_dir: Path, cache_root: Path,
              log: logging.Logger | logging.LoggerAdapter[Any] | None = None
              ) -> RobustnessResult:
    """Every variant of ``config.robustness`` (and the adversarial attacks) against the clean
    run's ``scores``; one INFO line per variant. ``cache_root`` holds ``inference/`` (the run's
    inference cache) and ``robustness/`` (the corrupted images)."""
    log = log or logger
    settings = config.robustness
    headline = headline_metric(config, scores)
    shared = SharedModel(dataset, config, inference.model_fingerprint)
    warnings: list[str] = []
    variants = plan_variants(settings)
    skip = text_skip_reason(config.task.value)
    if skip and any(v.text for v in variants):
        warnings.append(f"robustness: text perturbations skipped: {skip}")
        variants = [v for v in variants if v.text is None]
    outcomes = []
    for variant in variants:
        outcome = evaluate_variant(variant, dataset, config, shared, run_dir, cache_root)
        log.info("%s", variant_line(outcome, scores, headline))
        outcomes.append(outcome)
    result = summarize(outcomes, scores, settings, headline)
    result.warnings = warnings + result.warnings
    result.section["model_loads"] = shared.loads
    if outcomes:
        result.files = {"robustness.csv": write_table(outcomes, run_dir / "robustness")}
    if settings.adversarial is not None:
        add_adversarial(result, dataset, config, run_dir)
    return result


def headline_metric(config: EvalConfig, scores: Scores) -> str:
    """The task's headline metric, or the first metric of the run when it did not run."""
    headline = get_task_kind(config.task.value).headline
    if headline in scores.metrics:
        return headline
    return next((k for k in scores.metrics if not is_interval_key(k)), headline)


def variant_line(outcome: Outcome, clean: Scores, headline: str) -> str:
    """``robustness gaussian_noise.3: accuracy=0.41 (clean 0.62), inference cache miss, 8
    items scored, 0 failed, images 8 written / 0 reused, 1.2 s``."""
    metrics = outcome.scores.metrics
    value = f"{headline}={metrics[headline]:.4g}" if headline in metrics else "no headline"
    base = f" (clean {clean.metrics[headline]:.4g})" if headline in clean.metrics else ""
    counts = outcome.scores.counts
    scored = next((v for k, v in counts.items() if k.endswith("_scored")), None)
    parts = [f"robustness {outcome.variant.label}: {value}{base}",
             f"inference cache {outcome.cache}"]
    if scored is not None:
        parts.append(f"{scored} scored, {counts.get('failed', 0)} failed")
    if outcome.images is not None:
        images = outcome.images
        parts.append(f"images {images.written} written / {images.reused} reused"
                     + (f" / {images.undecodable} undecodable" if images.undecodable else ""))
    return ", ".join(parts) + f", {outcome.seconds:.1f} s"


# -- summaries --------------------------------------------------------------------------------


def summary_metrics(clean: Scores) -> list[str]:
    """The metrics that get means, drops and CEs: the clean run's estimated metrics (not
    interval bounds, not settings such as matching's threshold)."""
    return [k for k in clean.metrics if not is_interval_key(k) and k in clean.estimates
            and finite(clean.metrics[k])]


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def error_of(metric: str, value: float, higher: bool) -> float | None:
    """The error of a metric value (see the module docstring); None when undefined."""
    if not higher:
        return value
    if metric.split(".")[0] in UNBOUNDED or not 0 <= value <= 1:
        return None
    return 1.0 - value


def relative_drop(clean: float, value: float, higher: bool) -> float | None:
    if clean == 0:
        return None
    return ((clean - value) if higher else (value - clean)) / abs(clean)


def corruption_summary(values: dict[str, list[float]], clean: Scores
                       ) -> dict[str, dict[str, float]]:
    """{"mean", "relative_drop", "ce"} -> metric -> value, from each metric's values over the
    severities."""
    out: dict[str, dict[str, float]] = {"mean": {}, "relative_drop": {}, "ce": {}}
    for metric, series in values.items():
        if not series:
            continue
        higher = clean.higher_is_better.get(metric, True)
        mean = sum(series) / len(series)
        out["mean"][metric] = mean
        drop = relative_drop(clean.metrics[metric], mean, higher)
        if drop is not None:
            out["relative_drop"][metric] = drop
        clean_error = error_of(metric, clean.metrics[metric], higher)
        errors = [error_of(metric, v, higher) for v in series]
        if clean_error and all(e is not None for e in errors):
            out["ce"][metric] = sum(e for e in errors if e is not None) / len(errors) \
                / clean_error
    return out


def overall_summary(corruptions: dict[str, dict[str, Any]], clean: Scores
                    ) -> dict[str, dict[str, float]]:
    """Over every corruption: mean of the means, its relative drop, and the mean CE."""
    out: dict[str, dict[str, float]] = {"mean": {}, "relative_drop": {}, "ce": {}}
    for metric in summary_metrics(clean):
        means = [c["mean"][metric] for c in corruptions.values() if metric in c["mean"]]
        if len(means) != len(corruptions) or not means:
            continue
        out["mean"][metric] = sum(means) / len(means)
        drop = relative_drop(clean.metrics[metric], out["mean"][metric],
                             clean.higher_is_better.get(metric, True))
        if drop is not None:
            out["relative_drop"][metric] = drop
        errors = [c["ce"][metric] for c in corruptions.values() if metric in c["ce"]]
        if len(errors) == len(corruptions):
            out["ce"][metric] = sum(errors) / len(errors)
    return out


def summarize(outcomes: list[Outcome], clean: Scores, settings: RobustnessConfig,
              headline: str) -> RobustnessResult:
    """MLflow metrics and report.json's section from the variants' scores."""
    keys = summary_metrics(clean)
    metrics: dict[str, float] = {}
    corruptions: dict[str, dict[str, Any]] = {}
    text: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for outcome in outcomes:
        variant, values = outcome.variant, outcome.scores.metrics
        metrics |= {f"robust.{variant.label}.{k}": v for k, v in values.items() if finite(v)}
        if variant.corruption is not None:
            entry = corruptions.setdefault(variant.corruption, {"severities": {}})
            entry["severities"][str(variant.severity)] = values
        elif variant.text is not None and variant.text_label is not None:
            drops = {k: d for k in keys if finite(values.get(k)) and (d := relative_drop(
                clean.metrics[k], values[k], clean.higher_is_better.get(k, True))) is not None}
            text[variant.text_label] = {"perturbation": variant.text.model_dump(mode="json"),
                                        "metrics": values, "relative_drop": drops}
            metrics |= {f"robust.text.{variant.text_label}.relative_drop.{k}": v
                        for k, v in drops.items()}
        if outcome.scores.skipped:
            warnings.append(f"robustness {variant.label}: metrics skipped: "
                            f"{outcome.scores.skipped}")
    for name, entry in corruptions.items():
        series = {k: [s[k] for s in entry["severities"].values() if finite(s.get(k))]
                  for k in keys}
        entry |= corruption_summary({k: v for k, v in series.items()
                                     if len(v) == len(entry["severities"])}, clean)
        for part in ("mean", "relative_drop", "ce"):
            metrics |= {f"robust.{name}.{part}.{k}": v for k, v in entry[part].items()}
    overall = overall_summary(corruptions, clean) if corruptions else {}
    for part, values in overall.items():
        metrics |= {f"robust.all.{part}.{k}": v for k, v in values.items()}
    section = {
        "settings": settings.model_dump(mode="json"), "headline": headline,
        "clean": {k: clean.metrics[k] for k in keys},
        "higher_is_better": {k: clean.higher_is_better.get(k, True) for k in keys},
        "definitions": DEFINITIONS, "corruptions": corruptions, "all": overall, "text": text,
        "variants": [variant_entry(o) for o in outcomes],
    }
    return RobustnessResult(metrics, section, warnings)


def variant_entry(outcome: Outcome) -> dict[str, Any]:
    """report.json's record of one variant: what it is, the cache, the counts, the time."""
    entry = describe(outcome.variant) | {
        "inference_cache": outcome.cache, "counts": outcome.scores.counts,
        "seconds": outcome.seconds, "warnings": outcome.scores.warnings,
        "skipped": outcome.scores.skipped}
    if outcome.images is not None:
        entry["images"] = dataclasses.asdict(outcome.images)
    return entry


def write_table(outcomes: list[Outcome], folder: Path) -> str:
    """robustness.csv: one row per (variant, metric) with its interval."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "robustness.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "corruption", "severity", "perturbation", "rate", "metric",
                         "value", "ci_low", "ci_high", "inference_cache"])
        for outcome in outcomes:
            variant, values = outcome.variant, outcome.scores.metrics
            text = variant.text
            for key in (k for k in values if not is_interval_key(k)):
                writer.writerow([variant.label, variant.corruption or "", variant.severity or "",
                                 text.name if text else "", text.rate if text else "", key,
                                 values[key], values.get(f"{key}_ci_low", ""),
                                 values.get(f"{key}_ci_high", ""), outcome.cache])
    return str(path)


# -- adversarial attacks ----------------------------------------------------------------------


class RobustnessError(RuntimeError):
    """A robustness setting that this installation cannot run."""


def add_adversarial(result: RobustnessResult, dataset: DatasetRef, config: EvalConfig,
                    run_dir: Path) -> None:
    """FGSM / PGD through ``tasks.robustness.adversarial``: its metrics onto the run, its
    curve and skip reason into the section (the reason also as a warning), its per-sample
    table into the report folder."""
    try:
        from tasks.robustness.adversarial import adversarial_metrics
    except ModuleNotFoundError as error:
        if error.name != "tasks.robustness.adversarial":
            raise
        raise RobustnessError("robustness.adversarial is set, but this installation has no "
                              "adversarial attacks (tasks.robustness.adversarial)") from None
    assert config.robustness.adversarial is not None
    attacks = adversarial_metrics(dataset, config, run_dir)
    result.metrics |= {k: v for k, v in attacks.metrics.items() if finite(v)}
    result.section["adversarial"] = {
        "settings": config.robustness.adversarial.model_dump(mode="json"),
        "metrics": attacks.metrics, "curve": attacks.curve, "skipped": attacks.skipped,
        "counts": getattr(attacks, "counts", {})}
    if attacks.skipped:
        result.warnings.append(f"robustness: adversarial attacks skipped: {attacks.skipped}")
    result.warnings += [f"robustness: adversarial: {w}" for w in getattr(attacks, "warnings",
                                                                           [])]
    per_sample = attacks.per_sample
    if per_sample is not None and len(per_sample):
        path = run_dir / "robustness" / "adversarial_per_sample.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet(per_sample, path)
        result.tables["adversarial"] = str(path)


def attach(report: dict[str, Any], scores: Scores, result: RobustnessResult | None) -> Scores:
    """Put the sweep into the report (section ``robustness``, its warnings) and its files next
    to the run's; returns the scores with those files added."""
    if result is None:
        return scores
    report["robustness"] = result.section
    report["warnings"] = [*report.get("warnings", []), *result.warnings]
    return dataclasses.replace(scores, files=scores.files | result.files,
                               extra_tables=scores.extra_tables | result.tables)
