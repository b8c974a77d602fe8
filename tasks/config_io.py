"""Config files and command-line overrides in, dotted MLflow params out.

``load_config`` reads YAML and applies ``key.sub=value`` overrides, then validates the schema;
errors name the field and the problem. ``flatten`` turns a config into MLflow params.
"""

from __future__ import annotations

import copy
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
