"""Secrets: which keys are secret, URLs with credentials, redacted copies, and the load-time
rule that keeps credentials out of the config (and so out of Prefect, MLflow and reports)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tasks.config_io import ConfigError, build_config, flatten
from tasks.secrets import (
    MASK,
    externalize_secrets,
    has_url_credentials,
    is_secret_key,
    key_segments,
    redact,
    redact_text,
    redact_url,
    resolve_references,
    split_tracking_uri,
    url_credential_paths,
)

SECRET_KEYS = ["api_token", "password", "secret_key", "access_key", "aws_secret_access_key",
               "credentials", "auth", "private_key", "apiToken", "AWSAccessKeyId",
               "X-Amz-Signature", "X-Amz-Security-Token", "sig", "passwd", "client_secret",
               "Authorization", "metric_options.clip_score.api_token", "storage.api_key"]
PUBLIC_KEYS = ["max_new_tokens", "tokenizer", "tokens", "model.generation.max_new_tokens",
               "maxNewTokens", "author", "authors", "key_column", "keys", "monkey",
               "passes", "tracking_uri", "signatures_path", "batch_size", "X-Amz-Expires"]


@pytest.fixture
def clean_env():
    """The validators move credentials into the process environment: undo that."""
    saved = dict(os.environ)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_TOKEN"):
        os.environ.pop(name, None)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def base_config(tmp_path: Path, **extra) -> dict:
    return {"model": {"path": str(tmp_path / "model")}, "dataset": {"path": str(tmp_path / "d")},
            "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}} | extra


# ------------------------------------------------------------------------------ keys


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", PUBLIC_KEYS)
def test_keys_that_only_contain_a_secret_word_are_not_secret(key):
    assert not is_secret_key(key)


def test_keys_split_on_separators_and_camel_case():
    assert key_segments("metric_options.clip-score/apiToken") == [
        "metric", "options", "clip", "score", "api", "token"]
    assert key_segments("AWSAccessKeyId") == ["aws", "access", "key", "id"]


# ------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize(("uri", "expected"), [
    ("http://user:pass@host:5000/x", "http://host:5000/x"),
    ("https://user:p@ss@host/", "https://host/"),  # a raw "@" in the password
    ("https://TOKEN123@github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("postgresql://mlflow:pw@db:5432/mlflow", "postgresql://db:5432/mlflow"),
    ("http://host/x?token=abc&a=1", "http://host/x?token=***&a=1"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=A&X-Amz-Credential=AK%2F1&X-Amz-Signature=f0"
     "&X-Amz-Expires=60", "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=A&X-Amz-Credential=***"
     "&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("https://acct.blob.core.windows.net/c/b?sv=2020&sig=abc%3D", "https://acct.blob.core"
     ".windows.net/c/b?sv=2020&sig=***"),
])
def test_redact_url(uri, expected):
    assert redact_url(uri) == expected
    assert has_url_credentials(uri)
    assert not has_url_credentials(redact_url(uri))


@pytest.mark.parametrize("uri", [
    "sqlite:////tmp/a@b/mlflow.db", "models:/clip@champion", "s3://bucket/prefix/x.jsonl",
    "http://127.0.0.1:5000", "/data/bench@v2/test.jsonl", "http://host/x?page=2&max_new_tokens=3",
])
def test_uris_without_credentials_stay_as_they_are(uri):
    assert redact_url(uri) == uri
    assert not has_url_credentials(uri)


def test_redact_url_of_nothing():
    assert redact_url(None) is None and redact_url("") == ""


def test_redact_text_finds_credentials_inside_messages():
    message = ("ConnectionError: cannot reach 'http://bob:hunter2@10.0.0.1:5000/api' "
               "(password=hunter2, Authorization: Bearer abcdefghijklmnop; max_new_tokens=30)")
    shown = redact_text(message)
    assert "hunter2" not in shown and "abcdefghijklmnop" not in shown
    assert "'http://10.0.0.1:5000/api'" in shown and "max_new_tokens=30" in shown


# ----------------------------------------------------------------------------- redact


def test_redact_is_a_deep_copy_with_secrets_masked():
    data = {"tracking": {"tracking_uri": "http://u:s3cret@host"},
            "metric_options": {"clip_score": {"api_token": "t0k3n", "prefix": "a photo",
                                              "key": "${env:MY_TOKEN}"},
                               "x": {"credentials": {"user": "u", "password": "p"}}},
            "model": {"generation": {"max_new_tokens": 30}, "auth": True, "password": None},
            "list": ["http://a:b@h/x", {"secret": 5}], "pair": ("ok", "https://t@h")}
    before = json.dumps(data, default=list)
    shown = redact(data)
    assert json.dumps(data, default=list) == before  # the original is untouched
    assert shown["tracking"]["tracking_uri"] == "http://host"
    assert shown["metric_options"]["clip_score"] == {"api_token": MASK, "prefix": "a photo",
                                                     "key": "${env:MY_TOKEN}"}
    assert shown["metric_options"]["x"]["credentials"] == MASK  # the whole subtree
    assert shown["model"] == {"generation": {"max_new_tokens": 30}, "auth": True,
                              "password": None}
    assert shown["list"] == ["http://h/x", {"secret": MASK}]
    assert shown["pair"] == ("ok", "https://h")
    assert redact("abc", key="api_token") == MASK


def test_url_credential_paths_name_the_fields():
    data = {"model": {"path": "http://u:p@h/m"}, "dataset": {"path": "d"},
            "report": {"formats": ["json", "s3://b/k?token=x"]}}
    assert url_credential_paths(data) == ["model.path", "report.formats[1]"]


# ------------------------------------------------------------- keeping secrets out of configs


def test_split_tracking_uri_moves_credentials_into_mlflow_variables():
    env: dict[str, str] = {}
    assert split_tracking_uri("https://alice:p%40ss@mlflow.example:443/", env) == \
        "https://mlflow.example:443/"
    assert env == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "p@ss"}
    env = {}
    assert split_tracking_uri("http://tok3n@host", env) == "http://host"
    assert env == {"MLFLOW_TRACKING_TOKEN": "tok3n"}


def test_split_tracking_uri_keeps_other_uris_with_credentials_in_the_environment():
    env: dict[str, str] = {}
    database = "postgresql://mlflow:pw@db:5432/mlflow"
    assert split_tracking_uri(database, env) is None
    assert env == {"MLFLOW_TRACKING_URI": database}
    for plain in (None, "", "sqlite:///mlflow.db", "http://host:5000"):
        assert split_tracking_uri(plain, env) == plain
    assert env == {"MLFLOW_TRACKING_URI": database}


def test_externalize_and_resolve_round_trip():
    env: dict[str, str] = {}
    options = {"clip_score": {"api_token": "t0k3n", "prefix": "a photo",
                              "model": "https://u:pw@hub/m", "ref": "${env:MINE}",
                              "credentials": {"user": "bob", "password": 1234}}}
    out = externalize_secrets(options, "BIFOCAL_SECRET", env)
    assert out["clip_score"]["api_token"] == "${env:BIFOCAL_SECRET_CLIP_SCORE_API_TOKEN}"
    assert out["clip_score"]["model"] == "${env:BIFOCAL_SECRET_CLIP_SCORE_MODEL}"
    assert out["clip_score"]["prefix"] == "a photo" and out["clip_score"]["ref"] == "${env:MINE}"
    assert out["clip_score"]["credentials"]["password"] == (
        "${env:BIFOCAL_SECRET_CLIP_SCORE_CREDENTIALS_PASSWORD}")
    assert "t0k3n" not in json.dumps(out) and "pw@" not in json.dumps(out)
    env["MINE"] = "mine"
    resolved = resolve_references(out, env)
    assert resolved["clip_score"] == {"api_token": "t0k3n", "prefix": "a photo",
                                      "model": "https://u:pw@hub/m", "ref": "mine",
                                      "credentials": {"user": "bob", "password": "1234"}}


def test_a_missing_reference_names_the_variable_only():
    with pytest.raises(ValueError, match=r"BIFOCAL_NOT_SET is not set"):
        resolve_references({"a": "${env:BIFOCAL_NOT_SET}"}, {})


def test_config_keeps_tracking_credentials_in_the_environment(tmp_path, clean_env):
    config = build_config(base_config(tmp_path, tracking={
        "tracking_uri": "http://alice:s3cret-pw@127.0.0.1:5000"}))
    assert config.tracking.tracking_uri == "http://127.0.0.1:5000"
    assert clean_env["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert clean_env["MLFLOW_TRACKING_PASSWORD"] == "s3cret-pw"
    assert "s3cret-pw" not in config.model_dump_json()
    config.tracking.tracking_uri = "http://bob:other-pw@127.0.0.1:5001"  # assignment too
    assert config.tracking.tracking_uri == "http://127.0.0.1:5001"
    assert "other-pw" not in config.model_dump_json()


def test_config_moves_secret_metric_options_into_the_environment(tmp_path, clean_env):
    config = build_config(base_config(tmp_path, metric_options={
        "clip_score": {"api_token": "t0k3n-xyz", "prefix": "A photo depicts"}}))
    option = config.metric_options["clip_score"]["api_token"]
    assert option == "${env:BIFOCAL_SECRET_CLIP_SCORE_API_TOKEN}"
    assert clean_env["BIFOCAL_SECRET_CLIP_SCORE_API_TOKEN"] == "t0k3n-xyz"
    assert resolve_references(option) == "t0k3n-xyz"
    assert "t0k3n-xyz" not in config.model_dump_json()


@pytest.mark.parametrize(("field", "value"), [
    ("model", {"path": "https://user:pl4nted@hub.example/clip"}),
    ("dataset", {"path": "https://data.example/x.jsonl?token=pl4nted"}),
    ("report", {"destination": "https://user:pl4nted@reports.example/r"}),
])
def test_config_refuses_other_urls_with_credentials_without_echoing_them(tmp_path, clean_env,
                                                                         field, value):
    with pytest.raises(ConfigError) as error:
        build_config(base_config(tmp_path, **{field: value}))
    assert f"{field}." in str(error.value) and "credentials" in str(error.value)
    assert "pl4nted" not in str(error.value)


def test_validation_errors_never_echo_secrets(tmp_path, clean_env):
    with pytest.raises(ConfigError) as error:  # a value where a section belongs
        build_config(base_config(tmp_path, metric_options={"api_token": "pl4nted"}))
    assert "metric_options.api_token" in str(error.value) and "pl4nted" not in str(error.value)
    with pytest.raises(ConfigError) as error:
        build_config(base_config(tmp_path, tracking={
            "tracking_uri": "http://u:pl4nted@h", "experiment": ["not", "a", "name"]}))
    assert "pl4nted" not in str(error.value)


def test_flatten_masks_by_whole_segments(tmp_path, clean_env):
    config = build_config(base_config(
        tmp_path, model={"path": str(tmp_path / "m"), "kind": "torch_module",
                         "generation": {"max_new_tokens": 32},
                         "torch_module": {"module": "pkg.mod:Net",
                                          "init_kwargs": {"api_key": "pl4nted", "tokens": 3}}},
        metric_options={"clip_score": {"api_token": "pl4nted"}}))
    params = flatten(config)
    assert params["model.generation.max_new_tokens"] == "32"
    assert params["model.torch_module.init_kwargs.api_key"] == MASK
    assert params["model.torch_module.init_kwargs.tokens"] == "3"
    assert params["metric_options.clip_score.api_token"] == (
        "${env:BIFOCAL_SECRET_CLIP_SCORE_API_TOKEN}")
    assert "pl4nted" not in json.dumps(params)


# ------------------------------------------------------------------- MLflow and the report


def test_mlflow_params_tags_and_links_never_hold_secrets(tmp_path, clean_env):
    from mlflow import MlflowClient

    from tasks.tracking import mlflow_log as ml

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = ml.start_run(uri, "secrets", "r", {"bifocal.model_path": "https://u:pl4nted@h/m",
                                                "auth_header": "Basic pl4nted"})
    ml.log_params(uri, run_id, {"db.password": "pl4nted", "max_new_tokens": "30",
                                "source": "s3://b/k?X-Amz-Signature=pl4nted",
                                "ref_token": "${env:MY_TOKEN}"})
    ml.set_tags(uri, run_id, {"bifocal.error": "HTTPError: http://u:pl4nted@h/api failed"})
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params == {"db.password": MASK, "max_new_tokens": "30",
                               "source": "s3://b/k?X-Amz-Signature=***",
                               "ref_token": "${env:MY_TOKEN}"}
    assert run.data.tags["bifocal.model_path"] == "https://h/m"
    assert run.data.tags["auth_header"] == MASK
    assert run.data.tags["bifocal.error"] == "HTTPError: http://h/api failed"
    assert "pl4nted" not in json.dumps({**run.data.params, **run.data.tags})
    assert ml.is_secret("storage.aws_secret_access_key")
    assert not ml.is_secret("model.generation.max_new_tokens")
    link = ml.run_link("http://u:pl4nted@h:5000", run_id, experiment_id="1")
    assert link == f"http://h:5000/#/experiments/1/runs/{run_id}"


def test_tracking_uri_from_the_environment_loses_its_credentials(clean_env):
    from tasks.tracking import mlflow_log as ml

    clean_env["MLFLOW_TRACKING_URI"] = "http://alice:pl4nted@127.0.0.1:5000"
    assert ml.tracking_uri(None) == "http://127.0.0.1:5000"
    assert clean_env["MLFLOW_TRACKING_PASSWORD"] == "pl4nted"


def test_start_tags_redact_a_model_url(tmp_path, clean_env):
    from tasks.tracking.run import start_tags

    config = build_config(base_config(tmp_path))
    # a path with credentials cannot be configured; redacted even if it got in somehow
    model = config.model.model_copy(update={"path": "https://u:pl4nted@hub/m"})
    tags = start_tags(config.model_copy(update={"model": model}), "code")
    assert tags["bifocal.model_path"] == "https://hub/m"


def test_report_config_and_tracking_uri_are_redacted(tmp_path, clean_env):
    from tasks.report.summary import build_report

    config = build_config(base_config(
        tmp_path, model={"path": str(tmp_path / "m"), "kind": "torch_module",
                         "generation": {"max_new_tokens": 32},
                         "torch_module": {"module": "pkg.mod:Net",
                                          "init_kwargs": {"secret": "pl4nted"}}},
        metric_options={"clip_score": {"api_token": "pl4nted"}}))
    dataset = SimpleNamespace(digest="d", rows_in=1, items=1, rejected=0, item_rows=1,
                              rejected_rows=0,
                              load_rejects=lambda: pd.DataFrame())
    inference = SimpleNamespace(model_fingerprint="m", fingerprint="f", code_version="c",
                                cache_state="miss", runtime={}, performance={})
    scores = SimpleNamespace(counts={}, metrics={"x": 1.0}, higher_is_better={"x": True},
                             estimates={}, row_key="item_id", skipped={}, warnings=[])
    run = {"run_name": "r", "mlflow_run_id": "id",
           "mlflow_tracking_uri": "http://u:pl4nted@h:5000"}
    report = build_report(config, run, dataset, inference, scores, None, {})
    assert report["mlflow_tracking_uri"] == "http://h:5000"
    assert report["config"]["model"]["torch_module"]["init_kwargs"]["secret"] == MASK
    assert report["config"]["model"]["generation"]["max_new_tokens"] == 32
    assert "pl4nted" not in json.dumps(report, default=str)
