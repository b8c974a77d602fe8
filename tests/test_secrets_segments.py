"""The secret filter matches whole key segments and known secret names, in both directions:
a planted secret never reaches MLflow or the config artifact, and a setting whose name merely
contains a secret word (``max_new_tokens``, ``tokenizer``, ``secretary``) is shown as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tasks.config_io import build_config, config_yaml, flatten
from tasks.secrets import MASK, is_secret_key, mask_value, redact
from tasks.tracking.mlflow_log import is_secret

PLANTED = "pl4nted-s3cret"
SECRET_NAMES = ["password", "passwd", "secret", "access_key", "secret_key", "api_key", "apikey",
                "token", "auth_token", "api_token", "access_token", "session_token",
                "credential", "credentials", "private_key", "db.password", "hub-token",
                "aws_secret_access_key", "AccessToken", "x.SESSION_TOKEN", "client_secret"]
PUBLIC_NAMES = ["max_new_tokens", "model.generation.max_new_tokens", "tokenizer",
                "tokenizer_path", "model.torch_module.tokenizer", "num_tokens", "secretary",
                "keys", "tokens",
                "author", "key_column", "monkey", "access", "api", "session_id", "private",
                "credit", "pass_rate"]


@pytest.mark.parametrize("key", SECRET_NAMES)
def test_known_secret_names_are_secret(key):
    assert is_secret_key(key) and is_secret(key)
    assert mask_value(key, PLANTED) == MASK


@pytest.mark.parametrize("key", PUBLIC_NAMES)
def test_names_that_merely_contain_a_secret_word_are_shown(key):
    assert not is_secret_key(key) and not is_secret(key)
    assert mask_value(key, "32") == "32"


def test_url_credentials_in_values_are_removed_under_any_key():
    shown = mask_value("model.path", f"https://user:{PLANTED}@hub.example/m?token={PLANTED}")
    assert shown == "https://hub.example/m?token=***"


def test_redact_masks_secret_subtrees_and_keeps_public_ones():
    data = {"generation": {"max_new_tokens": 30}, "tokenizer": "tok/",
            "storage": {"credentials": {"user": "u", "key": PLANTED}},
            "secretary": "Ann", "api_token": PLANTED}
    shown = redact(data)
    assert shown == {"generation": {"max_new_tokens": 30}, "tokenizer": "tok/",
                     "storage": {"credentials": MASK}, "secretary": "Ann", "api_token": MASK}



def planted_config(tmp_path: Path):
    return build_config({
        "task": "matching",
        "model": {"path": str(tmp_path / "w.pt"), "kind": "torch_module",
                  "generation": {"max_new_tokens": 32},
                  "torch_module": {"module": "pkg.mod:Net", "tokenizer": str(tmp_path / "tok"),
                                   "init_kwargs": {"api_key": PLANTED, "num_tokens": 7,
                                                   "secretary": "kept"}}},
        "dataset": {"path": str(tmp_path / "d.jsonl")},
        "metric_options": {"clip_score": {"access_token": PLANTED}}})


def test_params_and_config_yaml_never_hold_a_planted_secret(tmp_path, clean_env):
    config = planted_config(tmp_path)
    params = flatten(config)
    text = config_yaml(config)
    assert PLANTED not in json.dumps(params) and PLANTED not in text
    assert params["model.torch_module.init_kwargs.api_key"] == MASK
    assert params["model.torch_module.init_kwargs.num_tokens"] == "7"
    assert params["model.torch_module.init_kwargs.secretary"] == "kept"
    assert params["model.torch_module.tokenizer"] == str(tmp_path / "tok")
    assert params["model.generation.max_new_tokens"] == "32"
    stored = yaml.safe_load(text)
    assert stored["model"]["torch_module"]["init_kwargs"]["api_key"] == MASK
    assert stored["metric_options"]["clip_score"]["access_token"].startswith("${env:")
