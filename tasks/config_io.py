"""Config files and command-line overrides in, dotted MLflow params out.

``load_config`` reads YAML and applies ``key.sub=value`` overrides, then validates the schema;
errors name the field and the problem. ``flatten`` turns a config into MLflow params;
``run_params`` keeps those of the sections that apply to the run (``APPLIES``) and
``config_yaml`` is the whole config as stored with the run (both with secrets redacted).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tasks.config import EvalConfig
from tasks.secrets import redact


class ConfigError(ValueError):
    """An invalid configuration; the message names the field and the problem."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.batch_size=32"`` -> (["model", "batch_size"], 32); values are parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {key!r} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "config"
        message = item["msg"].removeprefix("Value error, ")
        # the input may be the whole config: never echo a secret in the message
        shown = redact(item.get("input"), key=where if item["loc"] else None)
        whole = not item["loc"] and isinstance(shown, dict)  # the message names the field
        got = "" if item["type"] == "missing" or whole else f" (got {shown!r})"
        lines.append(f"  {where}: {message}{got}")
    return "invalid configuration:\n" + "\n".join(lines)


def build_config(data: dict[str, Any], overrides: list[str] | None = None) -> EvalConfig:
    data = apply_overrides(copy.deepcopy(data), overrides or [])
    try:
        return EvalConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file whose top level is a mapping; a clear ``ConfigError`` otherwise."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping at the top level")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> EvalConfig:
    """Read a YAML config and apply ``key.sub=value`` overrides."""
    return build_config(read_yaml_mapping(path), overrides)


def flatten(config: EvalConfig) -> dict[str, str]:
    """Dotted key -> string value, for MLflow params; secrets redacted (``tasks.secrets``)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        else:
            out[prefix] = value if isinstance(value, str) else yaml.safe_dump(
                value, default_flow_style=True, width=10_000
            ).strip().removesuffix("...").strip()

    walk("", redact(config.model_dump(mode="json")))
    return out


@dataclass(frozen=True)
class AppliesWhen:
    """A config section applies when the config value at ``key`` is one of ``values``, or,
    with no ``values``, when that value is set (not None, not empty)."""

    key: str
    values: frozenset[str] = frozenset()

    def holds(self, config: dict[str, Any]) -> bool:
        value: Any = config
        for part in self.key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value in self.values if self.values else value not in (None, "", [], {})


# Sections logged as MLflow params only when they apply to the run (the rest always are).
APPLIES: dict[str, AppliesWhen] = {
    "zero_shot": AppliesWhen("task", frozenset({"zero_shot_classification"})),
    "matching": AppliesWhen("task", frozenset({"matching"})),
    "vqa": AppliesWhen("task", frozenset({"vqa"})),
    "text_to_image": AppliesWhen("task", frozenset({"text_to_image"})),
    "model.generation": AppliesWhen("model.kind", frozenset({"captioner", "vqa"})),
    "model.torch_module": AppliesWhen("model.kind", frozenset({"torch_module"})),
    "gate": AppliesWhen("gate"),
    "promote": AppliesWhen("promote"),
    "slices": AppliesWhen("slices.columns"),
    "tracking.parent_run_id": AppliesWhen("tracking.parent_run_id"),
    "robustness.corruptions": AppliesWhen("robustness.corruptions"),
    "robustness.severities": AppliesWhen("robustness.corruptions"),
    "robustness.text": AppliesWhen("robustness.text"),
    "robustness.adversarial": AppliesWhen("robustness.adversarial"),
}


def _section_of(key: str) -> str | None:
    """The ``APPLIES`` section a dotted param key belongs to, if any."""
    return next((section for section in APPLIES
                 if key == section or key.startswith(f"{section}.")), None)


def run_params(config: EvalConfig) -> dict[str, str]:
    """``flatten(config)`` without the sections that do not apply to the run's task and model
    kind (``APPLIES``); the whole config goes with the run as ``config_yaml``."""
    data = config.model_dump(mode="json")
    applies = {section: rule.holds(data) for section, rule in APPLIES.items()}
    return {key: value for key, value in flatten(config).items()
            if applies.get(_section_of(key) or "", True)}


def config_yaml(config: EvalConfig) -> str:
    """The whole config as YAML, secrets redacted as in report.json (``tasks.secrets``)."""
    return yaml.safe_dump(redact(config.model_dump(mode="json")), sort_keys=False,
                          allow_unicode=True)
