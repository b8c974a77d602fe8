"""The suite file: models x datasets (+ shared settings) in, one run config per pair out;
errors name the suite entry (``models[1].path: Field required``)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.config import DatasetConfig, EvalConfig, GateConfig, ModelConfig, PromoteConfig
from tasks.config_io import ConfigError, flatten, parse_override, read_yaml_mapping
from tasks.secrets import externalize_secrets, split_tracking_uri

if TYPE_CHECKING:  # pandas is imported where a table is built
    pass

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"


class SuiteModel(ModelConfig):
    """One model of a suite: a name plus every ``model`` field of an evaluation."""

    name: str = Field(..., pattern=NAME_PATTERN, max_length=100,
                      description="Short name of the model in run names and the leaderboard "
                      "(letters, digits, _ . -).")


class SuiteDataset(DatasetConfig):
    """One dataset of a suite: a name plus every ``dataset`` field of an evaluation."""

    name: str = Field(..., pattern=NAME_PATTERN, max_length=100,
                      description="Short name of the dataset in run names and the leaderboard "
                      "(letters, digits, _ . -).")


class SuiteGate(GateConfig):
    """The suite's regression gate: ONE evaluation of the grid (a model on a dataset) is
    compared with the baseline, e.g. the candidate against ``models:/NAME@champion`` on the
    dataset the champion was evaluated on."""

    model: str = Field(..., description="Name of the models entry that is gated (the "
                       "candidate); it is the model promotion registers on a pass.")
    dataset: str = Field(..., description="Name of the datasets entry the gate compares on: "
                         "the baseline's run must have evaluated the same data.")


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(..., min_length=1, max_length=250,
                      description="Suite name: the name of the MLflow run the evaluations are "
                      "nested under.")
    models: list[SuiteModel] = Field(
        ..., min_length=1, description="Models to evaluate: each a name plus the model "
        "settings of an evaluation (kind, path, batch_size, device, ...)."
    )
    datasets: list[SuiteDataset] = Field(
        ..., min_length=1, description="Datasets every model is evaluated on: each a name plus "
        "the dataset settings of an evaluation (source, path, split, limit, ...)."
    )
    shared: dict[str, Any] = Field(
        default_factory=dict, description="Every other evaluation setting, applied to each "
        "model x dataset evaluation: task, metrics, metric_options, inference, review, report, "
        "tracking, work_dir, seed, ... (the fields of a run config except model and dataset). "
        "tracking.run_name defaults to <model name>@<dataset name>."
    )
    fail_fast: bool = Field(
        False, description="Stop at the first failed evaluation (default: run all of them, "
        "then fail the suite when any failed)."
    )
    gate: SuiteGate | None = Field(
        None, description="Regression gate of one evaluation of the suite (gate.model on "
        "gate.dataset) against a baseline; a failed gate fails that evaluation and the suite "
        "(after every evaluation ran), the leaderboard is still published."
    )
    promote: PromoteConfig | None = Field(
        None, description="On a passed gate (needs gate), register gate.model as a new version "
        "of a registered model and move the alias to it."
    )

    @field_validator("shared")
    @classmethod
    def _no_secrets_in_shared(cls, shared: dict[str, Any]) -> dict[str, Any]:
        """The suite is a Prefect flow parameter: credentials leave it as in a run config
        (tracking URI credentials to MLflow's environment variables, other secrets to
        ``${env:...}`` references)."""
        shared = copy.deepcopy(shared)
        tracking = shared.get("tracking")
        if isinstance(tracking, dict) and isinstance(tracking.get("tracking_uri"), str):
            tracking["tracking_uri"] = split_tracking_uri(tracking["tracking_uri"])
        return externalize_secrets(shared, "BIFOCAL_SECRET_SHARED")


# ---------------------------------------------------------------------------- config in


def _path(loc: tuple[Any, ...], text: str = "") -> str:
    """``("models", 1, "path")`` -> ``models[1].path``."""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _where(loc: tuple[Any, ...]) -> str:
    return _path(loc) or "suite"


def _problems(error: ValidationError, place: Any = _where) -> list[str]:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        got = "" if item["type"] == "missing" else f" (got {item.get('input')!r})"
        lines.append(f"{place(item['loc'])}: {message}{got}")
    return lines


def _invalid(problems: list[str]) -> ConfigError:
    lines = "\n".join(f"  {p}" for p in dict.fromkeys(problems))
    return ConfigError("invalid suite configuration:\n" + lines)


def _entry_index(node: list[Any], key: str, text: str) -> int:
    if re.fullmatch(r"\d+", key) and int(key) < len(node):
        return int(key)
    for index, entry in enumerate(node):
        if isinstance(entry, dict) and entry.get("name") == key:
            return index
    raise ConfigError(f"override {text!r}: no entry {key!r} (give an index or an entry's name)")


def apply_suite_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Like ``config_io.apply_overrides`` (``key.sub=value``, values parsed as YAML), where a
    list entry is addressed by index or by name: ``models.clip-long.batch_size=32``,
    ``datasets.0.limit=100``, ``shared.review.size=0``."""
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = data
        for key in keys[:-1]:
            if isinstance(node, list):
                child = node[_entry_index(node, key, text)]
            else:
                child = node.setdefault(key, {})
            if not isinstance(child, dict | list):
                raise ConfigError(f"override {text!r}: {key!r} is not a section")
            node = child
        if isinstance(node, list):
            node[_entry_index(node, keys[-1], text)] = value
        else:
            node[keys[-1]] = value
    return data


def build_suite(data: dict[str, Any], overrides: list[str] | None = None) -> SuiteConfig:
    data = apply_suite_overrides(copy.deepcopy(data), overrides or [])
    try:
        return SuiteConfig.model_validate(data)
    except ValidationError as error:
        raise _invalid(_problems(error)) from None


def load_suite(path: str | Path, overrides: list[str] | None = None) -> SuiteConfig:
    """Read a suite YAML file and apply ``key.sub=value`` overrides."""
    return build_suite(read_yaml_mapping(path, "suite"), overrides)


def _structure_problems(suite: SuiteConfig) -> list[str]:
    problems = []
    names = {"models": [m.name for m in suite.models],
             "datasets": [d.name for d in suite.datasets]}
    for field, entries in names.items():
        first: dict[str, int] = {}
        for index, name in enumerate(entries):
            if name in first:
                problems.append(f"{field}[{index}].name: duplicate name {name!r} "
                                f"(also {field}[{first[name]}])")
            first.setdefault(name, index)
    for key, field in (("model", "models"), ("dataset", "datasets")):
        if key in suite.shared:
            problems.append(f"shared.{key}: not shared; give each entry of {field} its own "
                            f"{key} settings")
    problems += _gate_problems(suite, names)
    tracking = suite.shared.get("tracking")
    if isinstance(tracking, dict) and tracking.get("parent_run_id"):
        problems.append("shared.tracking.parent_run_id: set by the suite flow, not in a suite")
    return problems


def _gate_problems(suite: SuiteConfig, names: dict[str, list[str]]) -> list[str]:
    """The suite's gate names existing entries; promotion needs the suite's gate."""
    problems = []
    if suite.gate is not None:
        for key, field in (("model", "models"), ("dataset", "datasets")):
            if getattr(suite.gate, key) not in names[field]:
                problems.append(f"gate.{key}: no {field} entry named "
                                f"{getattr(suite.gate, key)!r}")
    if suite.promote is not None and suite.gate is None:
        problems.append("promote: needs the suite's gate (promotion happens on a passed gate)")
    if suite.gate is not None or suite.promote is not None:
        problems += [f"shared.{key}: the suite has its own gate/promote; remove this one"
                     for key in ("gate", "promote") if key in suite.shared]
    return problems


def label_of(model: str, dataset: str) -> str:
    return f"{model}@{dataset}"


def split_label(label: str) -> tuple[str, str]:
    """``"model@dataset"`` -> (model, dataset); names cannot contain ``@``."""
    model, _, dataset = label.partition("@")
    return model, dataset


def _eval_data(suite: SuiteConfig, model: SuiteModel, dataset: SuiteDataset) -> dict[str, Any]:
    data = copy.deepcopy(suite.shared)
    data["model"] = model.model_dump(mode="json", exclude={"name"})
    data["dataset"] = dataset.model_dump(mode="json", exclude={"name"})
    tracking = data.get("tracking")
    if tracking is None:
        tracking = {}
    if isinstance(tracking, dict):  # anything else is reported by the schema
        tracking = dict(tracking)
        if not tracking.get("run_name"):
            tracking["run_name"] = label_of(model.name, dataset.name)
    data["tracking"] = tracking
    gate = suite.gate
    if gate is not None and (model.name, dataset.name) == (gate.model, gate.dataset):
        data["gate"] = gate.model_dump(mode="json", exclude={"model", "dataset"})
        if suite.promote is not None:
            data["promote"] = suite.promote.model_dump(mode="json")
    return data


def expand_suite(suite: SuiteConfig) -> list[tuple[str, EvalConfig]]:
    """One ``("<model>@<dataset>", EvalConfig)`` per model x dataset, models first; raises
    ``ConfigError`` naming every problem by its suite entry."""
    problems = _structure_problems(suite)
    if problems:
        raise _invalid(problems)
    pairs = []
    for m, model in enumerate(suite.models):
        for d, dataset in enumerate(suite.datasets):
            try:
                config = EvalConfig.model_validate(_eval_data(suite, model, dataset))
            except ValidationError as error:
                problems += _problems(error, lambda loc, m=m, d=d: _entry_loc(loc, m, d))
                continue
            pairs.append((label_of(model.name, dataset.name), config))
    if problems:
        raise _invalid(problems)
    return pairs


def _entry_loc(loc: tuple[Any, ...], m: int, d: int) -> str:
    """An evaluation's field -> where it comes from in the suite."""
    head = {"model": f"models[{m}]", "dataset": f"datasets[{d}]"}.get(str(loc[0]) if loc else "")
    return _path(loc[1:], head) if head else _path(loc, "shared")


def _entry_line(line: str, m: int, d: int) -> str:
    """``model.kind: ...`` -> ``models[1].kind: ...``; other fields come from ``shared``."""
    match = re.match(r"(model|dataset)(?=[.:\s])", line)
    if not match:
        return f"shared.{line}"
    head = f"models[{m}]" if match.group(1) == "model" else f"datasets[{d}]"
    return head + line[match.end():]


def check_suite(suite: SuiteConfig) -> list[tuple[str, EvalConfig]]:
    """``expand_suite`` plus ``tasks.plan.check_config`` on every evaluation; all problems are
    reported together, before anything runs."""
    from tasks.plan import check_config

    pairs = expand_suite(suite)
    models = {entry.name: index for index, entry in enumerate(suite.models)}
    datasets = {entry.name: index for index, entry in enumerate(suite.datasets)}
    problems: list[str] = []
    for label, config in pairs:
        model, dataset = split_label(label)
        try:
            check_config(config)
        except ConfigError as error:
            lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
            problems += [_entry_line(line, models[model], datasets[dataset]) for line in lines]
    if problems:
        raise _invalid(problems)
    return pairs


def suite_params(suite: SuiteConfig, pairs: list[tuple[str, EvalConfig]]) -> dict[str, str]:
    """Params of the suite's MLflow run: entries, and the settings every evaluation shares."""
    params = {"suite.name": suite.name, "suite.fail_fast": str(suite.fail_fast).lower(),
              "suite.models": ", ".join(m.name for m in suite.models),
              "suite.datasets": ", ".join(d.name for d in suite.datasets),
              "suite.evaluations": str(len(pairs))}
    params |= {f"models.{m.name}.path": m.path for m in suite.models}
    params |= {f"datasets.{d.name}.path": d.path for d in suite.datasets}
    if suite.gate is not None:
        params["suite.gate"] = (f"{label_of(suite.gate.model, suite.gate.dataset)} vs "
                                f"{suite.gate.baseline}")
    if suite.promote is not None:
        params["suite.promote"] = f"{suite.promote.model_name}@{suite.promote.alias}"
    if pairs:
        skip = ("model.", "dataset.", "tracking.run_name", "tracking.parent_run_id", "gate.",
                "promote.")
        params |= {f"shared.{key}": value for key, value in flatten(pairs[0][1]).items()
                   if not key.startswith(skip)}
    return params
