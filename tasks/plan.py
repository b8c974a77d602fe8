"""The check between a valid schema and a run: names that live in registries, and rules across
them. The CLI calls it after reading a config and every flow calls it first, so runs started
from the Prefect UI (which validates only the schema) are checked the same way.

Errors are collected and reported together, in the schema errors' format
(``field: problem``), as one ``ConfigError``.

``check_inputs`` is the CLI's pre-flight for what a run will read: the dataset file's shape
(local manifest / Karpathy sources: readable, the mapped columns present, at least one row; no
image is opened) and the model checkpoint's presence. It runs before the flow starts, so a broken
file costs no Prefect server start, no MLflow run and no retries.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tasks.config import DatasetConfig, EvalConfig, SamplingStrategy
from tasks.config_io import ConfigError
from tasks.data.base import SOURCES, DataError, RawTable, normalize
from tasks.kinds import TaskKindContract, get_task_kind
from tasks.metrics import METRICS
from tasks.metrics.base import MetricOption
from tasks.models.base import ADAPTERS
from tasks.registry import Registry

# Sources whose input is one local file that is cheap to read twice (once here, once in the
# flow's data stage). Remote or materialising sources (s3, hf) are checked by the flow alone.
PREFLIGHT_SOURCES = frozenset({"manifest", "karpathy"})


def check_config(config: EvalConfig) -> TaskKindContract:
    """Raise ``ConfigError`` naming every problem; return the task kind to run."""
    problems = _unknown(ADAPTERS, [config.model.kind], "model.kind", "model kind")
    problems += _unknown(SOURCES, [config.dataset.source], "dataset.source", "data source")
    problems += _unknown(METRICS, config.metrics, "metrics", "metric")
    kind = get_task_kind(config.task.value)
    if not problems:
        problems += _model_fits_task(config, kind) + _metrics_match_task(config, kind)
    problems += _metric_options(config.metric_options) + _review_strategies(config)
    problems += _text_to_image(config) + _robustness(config)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
    return kind


def _unknown(registry: Registry[Any], names: list[str], field: str, noun: str) -> list[str]:
    known = registry.names()
    return [f"{field}: unknown {noun} {name!r}; known: {', '.join(known)} (got {name!r})"
            for name in names if name not in known]


def _model_fits_task(config: EvalConfig, kind: TaskKindContract) -> list[str]:
    allowed = kind.model_kinds
    if allowed and config.model.kind not in allowed:
        return [f"model.kind: task {kind.name!r} needs model.kind in {list(allowed)}, "
                f"got {config.model.kind!r}"]
    return []


def _metrics_match_task(config: EvalConfig, kind: TaskKindContract) -> list[str]:
    return [f"metrics: metric {name!r} is for task {METRICS.get(name).task!r}, not "
            f"{kind.metric_task!r}" for name in config.metrics
            if METRICS.get(name).task != kind.metric_task]


def _text_to_image(config: EvalConfig) -> list[str]:
    """Task text_to_image needs its reference images, and Inception features a local weights
    file and torch-fidelity (nothing is downloaded)."""
    if config.task.value != "text_to_image":
        return []
    from tasks.kinds.text_to_image.inception import inception_problem

    settings = config.text_to_image
    problems = []
    if not settings.references:
        problems.append("text_to_image.references: task 'text_to_image' needs the reference "
                        "images (a folder or a manifest file)")
    problem = inception_problem(settings.inception_weights) \
        if settings.features == "inception" else None
    if problem:
        problems.append(f"text_to_image.inception_weights: {problem}")
    return problems


def _robustness(config: EvalConfig) -> list[str]:
    """Corruption and text perturbation names against their registries (before the clean run,
    not after it)."""
    from tasks.robustness.corruptions import CORRUPTIONS
    from tasks.robustness.perturbations import PERTURBATIONS

    settings = config.robustness
    problems = _unknown(CORRUPTIONS, settings.corruptions, "robustness.corruptions",
                        "image corruption")
    for index, perturbation in enumerate(settings.text):
        problems += _unknown(PERTURBATIONS, [perturbation.name],
                             f"robustness.text[{index}].name", "text perturbation")
    return problems


# what each sampling strategy cannot run without (runtime gaps, e.g. a column the per-sample
# table lacks, are skipped with a warning instead)
_STRATEGY_NEEDS: dict[str, tuple[str, Callable[[SamplingStrategy], bool]]] = {
    "stratified": ("a column to stratify by", lambda s: bool(s.column)),
    "disagreement": ("exactly two metrics", lambda s: len(s.metrics) == 2),
    "filter_top_k": ("thresholds", lambda s: bool(s.thresholds)),
}


def _review_strategies(config: EvalConfig) -> list[str]:
    from tasks.review.strategies import STRATEGIES

    known = STRATEGIES.names()
    problems = []
    for index, strategy in enumerate(config.review.strategies):
        where = f"review.strategies[{index}]"
        if strategy.name not in known:
            problems.append(f"{where}.name: unknown sampling strategy {strategy.name!r}; "
                            f"known: {', '.join(known)}")
        elif strategy.name in _STRATEGY_NEEDS and not _STRATEGY_NEEDS[strategy.name][1](strategy):
            problems.append(f"{where}: {strategy.name} needs "
                            f"{_STRATEGY_NEEDS[strategy.name][0]}")
    return problems


def _metric_options(options: dict[str, dict[str, Any]]) -> list[str]:
    """Every ``metric_options.<metric>.<option>`` against the metric's declared options: the
    metric exists, the option is one of its keyword parameters (any name when it takes
    ``**kwargs``) and the value has the parameter's type."""
    problems = []
    known = METRICS.names()
    for name, values in options.items():
        if name not in known:
            problems.append(f"metric_options.{name}: unknown metric {name!r}; known: "
                            f"{', '.join(known)}")
            continue
        spec = METRICS.get(name)
        declared = spec.options()
        for key, value in values.items():
            where = f"metric_options.{name}.{key}"
            if key in declared:
                problems += [f"{where}{problem}" for problem in _option_problems(declared[key],
                                                                                  value)]
            elif not spec.takes_any_option():
                takes = ", ".join(declared) if declared else "no options"
                problems.append(f"{where}: unknown option for metric {name!r}; it takes: {takes}")
    return problems


def _option_problems(option: MetricOption, value: Any) -> list[str]:
    """Problems of one option value, as ``<suffix>: message (got value)``; the value is read as
    the JSON-like data a YAML file or ``--set`` gives (strict: "5" is not a number)."""
    try:
        TypeAdapter(option.annotation).validate_json(json.dumps(value, default=str),
                                                     strict=True)
    except ValidationError as error:
        problems: dict[str, None] = {}  # ordered set: union members repeat their messages
        for item in error.errors():
            # union members name themselves in the location; keep the list indices only
            index = "".join(f"[{part}]" for part in item["loc"] if isinstance(part, int))
            problems[f"{index}: {item['msg']} (got {value!r})"] = None
        return list(problems)
    return []


def check_inputs(config: EvalConfig) -> None:
    """Pre-flight of the files a run reads (after ``check_config``): ``DataError`` for a dataset
    file that cannot be read, lacks the mapped columns or has no rows; ``ModelError`` for a
    checkpoint that is not there. Nothing is written and no image or weight is loaded."""
    check_dataset_file(config.dataset)
    references = config.text_to_image.references
    if config.task.value == "text_to_image" and references \
            and not Path(references).expanduser().exists():
        raise DataError(f"reference images {references}: no such folder or manifest file")
    ADAPTERS.get(config.model.kind).check_files(config.model)


def check_dataset_file(config: DatasetConfig) -> None:
    """The data stage's file-level checks for sources that read one local file: read it, map
    the columns (``normalize`` on zero rows: no image is opened), refuse a file without rows."""
    if config.source not in PREFLIGHT_SOURCES:
        return
    raw = SOURCES.get(config.source)(config)
    if raw.rows.empty:
        raise DataError(_no_rows(raw, config))
    normalize(raw, config.model_copy(update={"limit": 0}))  # column checks; no image is read


def _no_rows(raw: RawTable, config: DatasetConfig) -> str:
    if raw.rejects:
        first = raw.rejects[0]
        hint = (" (JSON lines expected: one JSON object per line, not a JSON array or an "
                "indented document)" if "JSON" in str(first["reason"]) else "")
        return (f"{raw.source_uri} has no usable rows: all {len(raw.rejects)} rows were "
                f"rejected, the first (row {first['row']}) as {first['reason']}{hint}")
    split = f" (after selecting split {config.split!r})" if config.split else ""
    return f"{raw.source_uri} has no rows{split}"
