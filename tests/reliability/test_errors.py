"""Expected errors end in one clear line (exit 2), permanent errors are not retried, metric
options are checked against the metrics' signatures before anything runs."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.config_io import ConfigError, build_config
from tasks.data.base import DataError
from tasks.models.base import ModelError
from tasks.steps import is_transient
from tests.helpers import write_dataset
from tests.reliability.error_corpus import CASES, REPO, judge, run_error_corpus

# ---- the corpus ---------------------------------------------------------------------------


def test_one_quick_case_per_class_is_a_clear_error(tmp_path: Path):
    """One case of every class that fails before the flow (the whole corpus is slow)."""
    firsts: dict[str, object] = {}
    for case in CASES:
        if not case.flow:
            firsts.setdefault(case.cls, case)
    summary = run_error_corpus(tmp_path, cases=list(firsts.values()))  # type: ignore[arg-type]
    assert summary["failures"] == []
    assert summary["clear_errors"] == summary["cases"] == len(firsts) >= 10
    assert summary["in_flow"] == 0  # all of them are caught before a Prefect server starts


@pytest.mark.slow
@pytest.mark.e2e
def test_error_corpus_every_case_is_one_clear_line(tmp_path: Path):
    from mlflow import MlflowClient

    summary = run_error_corpus(tmp_path)
    assert summary["failures"] == []
    assert summary["cases"] >= 40 and summary["classes"] >= 10
    assert summary["clear_errors"] == summary["cases"]
    assert summary["tracebacks"] == summary["wrong_exit"] == 0
    assert summary["markers_written"] == 0  # no pickled payload ever ran
    flow_cases = sum(case.flow for case in CASES)
    assert summary["in_flow"] == flow_cases <= 5
    # the runs that reached the flow still end FAILED with the error on the MLflow run
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("error-corpus").experiment_id])
    assert len(runs) == flow_cases
    assert all(run.info.status == "FAILED" and run.data.tags["bifocal.error"].startswith(
        ("ModelError: ", "DataError: ")) for run in runs)


def test_judge_accepts_log_records_and_refuses_dumps():
    line = "bifocal: error: manifest m.csv is empty (0 bytes)"
    info = ("18:01:36.263 | INFO    | prefect - Starting temporary server\n"
            "See https://docs.prefect.io/v3/concepts/server for more information.\n")
    assert judge(line + "\n", 2, "is empty") is None
    assert judge(info + line + "\n", 2, "is empty") is None
    assert judge(line + "\n", 1, "is empty") == "exit status 1, not 2"
    assert "phrase" in judge(line + "\n", 2, "no rows")
    dumped = "18:01:47.111 | ERROR   | Task run 'x' - failed: ValueError\nsecond line\n"
    assert "stray stderr line" in judge(dumped + line, 2, "is empty")
    assert judge("Traceback (most recent call last):\n" + line, 2, "is empty") \
        == "traceback on stderr"
    assert "2 'bifocal:' lines" in judge(line + "\n" + line, 2, "is empty")


# ---- the CLI's error handling -------------------------------------------------------------


def _bifocal(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def test_debug_flag_shows_the_traceback_and_the_full_message(tmp_path: Path):
    (tmp_path / "c.yaml").write_text("model: {path: m, batch_size: 0}\ndataset: {path: d}\n"
                                     "review: {size: -1}\n")
    quiet = _bifocal("run", str(tmp_path / "c.yaml"), cwd=tmp_path)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert quiet.stderr.count("\n") == 1
    assert quiet.stderr.startswith("bifocal: error: invalid configuration: model.batch_size: ")
    assert "; review.size: " in quiet.stderr
    debug = _bifocal("--debug", "run", str(tmp_path / "c.yaml"), cwd=tmp_path)
    assert debug.returncode == 2
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert "bifocal: error: invalid configuration:\n  model.batch_size: " in debug.stderr


def test_prefect_failure_logs_lose_the_traceback_of_expected_errors_only(caplog):
    from flows.cli import quiet_expected_errors

    logger = logging.getLogger("prefect.task_runs")

    def logged(error: Exception) -> logging.LogRecord:
        caplog.clear()
        try:
            raise error
        except Exception:
            logger.error("Task run failed with exception: %r", error, exc_info=True,
                         extra={"send_to_api": False})  # no flow run here
        return caplog.records[-1]

    with caplog.at_level(logging.ERROR, logger="prefect.task_runs"), quiet_expected_errors():
        for expected in (DataError("broken manifest"), ModelError("pickled"),
                         ConfigError("bad")):
            record = logged(expected)
            assert record.exc_info is None and "Task run failed" in record.getMessage()
        assert logged(RuntimeError("a bug")).exc_info is not None
        assert logged(ValueError("from a library")).exc_info is not None
    with caplog.at_level(logging.ERROR, logger="prefect.task_runs"), \
            quiet_expected_errors(enabled=False):  # --debug
        assert logged(DataError("broken manifest")).exc_info is not None
    assert logged(DataError("outside the CLI")).exc_info is not None


def test_one_line_joins_a_multi_line_message():
    from flows.cli import one_line

    assert one_line(ConfigError("invalid configuration:\n  a: x\n  b: y")) == \
        "invalid configuration: a: x; b: y"
    assert one_line(ValueError("first\n\nsecond")) == "first; second"
    assert one_line(EOFError()) == "EOFError"


# ---- retries: only what can heal ----------------------------------------------------------


def _raised_while_handling(error: Exception, cause: Exception) -> Exception:
    """``error`` raised ``from None`` in an ``except`` block of ``cause`` (as tasks.data.s3
    does): the cause is the suppressed context."""
    try:
        try:
            raise cause
        except Exception:
            raise error from None
    except Exception as raised:
        return raised


def _client_error(status: int, code: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def test_transient_errors_are_network_throttling_and_5xx_only():
    import requests
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
    from mlflow.exceptions import RestException

    transient = [
        ConnectionError("reset"), ConnectionResetError(), TimeoutError("read"),
        OSError(104, "Connection reset by peer"),
        requests.exceptions.ConnectionError("refused"), requests.exceptions.ReadTimeout(),
        EndpointConnectionError(endpoint_url="http://s3"),
        ReadTimeoutError(endpoint_url="http://s3"),
        _client_error(503, "SlowDown"), _client_error(500, "InternalError"),
        _client_error(400, "RequestTimeout"), _client_error(429, "TooManyRequests"),
        RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}),
        RestException({"error_code": "INTERNAL_ERROR", "message": "oops"}),
        RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}),
        sqlite3.OperationalError("database is locked"),
        _raised_while_handling(DataError("S3 request failed"), _client_error(503, "SlowDown")),
    ]
    permanent = [
        DataError("broken manifest"), ModelError("pickled"), ConfigError("bad"),
        ValueError("x"), RuntimeError("bug"), FileNotFoundError(2, "No such file"),
        PermissionError(13, "denied"), IsADirectoryError(21, "dir"),
        _client_error(403, "AccessDenied"), _client_error(404, "NoSuchKey"),
        RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}),
        RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad key"}),
        sqlite3.OperationalError("no such table: runs"),
        _raised_while_handling(DataError("manifest m.csv has no data rows"),
                               ValueError("parse")),
        _raised_while_handling(DataError("access denied"), _client_error(403, "AccessDenied")),
    ]
    assert [e for e in transient if not is_transient(e)] == []
    assert [e for e in permanent if is_transient(e)] == []


def test_every_retried_step_has_the_retry_condition():
    from tasks import steps

    retried = [t for t in vars(steps).values() if getattr(t, "retries", 0)]
    assert {t.name for t in retried} >= {"load-data", "export-report", "track-results",
                                         "demo-assets"}
    assert all(t.retry_condition_fn is steps.retry_transient for t in retried)


@pytest.mark.e2e
def test_load_data_fails_once_on_data_errors_and_retries_network_errors(
        prefect_harness, tmp_path: Path, monkeypatch):
    from prefect import flow

    from tasks import steps
    from tasks.data import load_dataset

    manifest = write_dataset(tmp_path / "ds", n=3)
    config = build_config({"model": {"path": str(tmp_path)}, "dataset": {"path": str(manifest)}})
    calls: list[str] = []
    planned: list[Exception] = []

    def flaky(dataset_config, digests=None):
        calls.append("call")
        if planned:
            raise planned.pop(0)
        return load_dataset(dataset_config, digests)

    monkeypatch.setattr(steps, "load_dataset", flaky)
    load_fast = steps.load_data.with_options(retry_delay_seconds=0)

    @flow
    def probe(run: str):
        return load_fast(config, tmp_path / run)

    planned[:] = [DataError("broken manifest")]
    with pytest.raises(DataError, match="broken manifest"):
        probe("permanent")
    assert len(calls) == 1  # tried once: a broken manifest does not heal

    calls.clear()
    planned[:] = [ConnectionError("connection reset"), TimeoutError("read timed out")]
    assert probe("transient").items == 3  # two retries, then the data
    assert len(calls) == 3


# ---- metric options -----------------------------------------------------------------------


def _config(**metric_options):
    return build_config({"model": {"path": "m"}, "dataset": {"path": "d.jsonl"},
                         "metric_options": metric_options})


def _problems(**metric_options) -> str:
    from tasks.plan import check_config

    with pytest.raises(ConfigError) as error:
        check_config(_config(**metric_options))
    return str(error.value)


def test_metric_options_are_derived_from_the_signature():
    from tasks.metrics import get_metric

    options = get_metric("retrieval").options()
    assert list(options) == ["ks"] and options["ks"].default == (1, 5, 10)
    assert set(get_metric("clip_score").options()) == {"model", "prefix", "device",
                                                      "batch_size", "w"}
    assert get_metric("bleu").options() == {}
    assert not get_metric("retrieval").takes_any_option()


def test_valid_metric_options_pass():
    from tasks.plan import check_config

    check_config(_config(retrieval={"ks": [1, 5, 50]}, cider={"sigma": 6},
                         meteor={"jar": "/opt/meteor.jar", "memory": "1G"},
                         clip_score={"model": None, "w": 2}))


def test_unknown_metric_option_and_wrong_types_name_the_field():
    assert "metric_options.retrieval.ks: Input should be a valid array (got 'five')" in \
        _problems(retrieval={"ks": "five"})
    assert "metric_options.retrieval.ks[1]: Input should be a valid integer" in \
        _problems(retrieval={"ks": [1, "5"]})
    assert "metric_options.retrieval.ks[0]: Input should be greater than 0" in \
        _problems(retrieval={"ks": [0]})
    assert "metric_options.retrieval.k: unknown option for metric 'retrieval'; it takes: ks" \
        in _problems(retrieval={"k": [1]})
    assert "metric_options.recall: unknown metric 'recall'" in _problems(recall={"ks": [1]})
    assert "metric_options.cider.sigma: Input should be a valid number (got '6')" in \
        _problems(cider={"sigma": "6"})
    every = _problems(retrieval={"ks": 5, "k": 1}, bleu={"n": 4})
    assert every.count("metric_options.") == 3  # all problems, in one error


def test_a_metric_taking_kwargs_checks_only_its_named_options(monkeypatch):
    from tasks.metrics import METRICS
    from tasks.metrics.base import MetricResult, MetricSpec
    from tasks.plan import check_config

    def open_metric(inputs, top: int = 3, **extra) -> MetricResult:
        return MetricResult()

    METRICS.names()  # load the registry before adding to it
    monkeypatch.setitem(METRICS._entries, "open_metric",
                        MetricSpec("open_metric", "retrieval", {"x": True}, open_metric))
    check_config(_config(open_metric={"top": 5, "anything": "goes"}))
    assert "metric_options.open_metric.top: Input should be a valid integer" in \
        _problems(open_metric={"top": "five"})


def test_bad_metric_options_exit_2_before_anything_runs(tmp_path: Path):
    (tmp_path / "c.yaml").write_text(
        "model: {path: m}\ndataset: {path: d.jsonl}\nmetric_options: {retrieval: {ks: five}}\n")
    result = _bifocal("run", str(tmp_path / "c.yaml"), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("bifocal: error: invalid configuration: metric_options.retrieval.ks:"
                             " Input should be a valid array (got 'five')\n")
