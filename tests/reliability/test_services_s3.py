"""S3 answering a seeded 30% of requests with 500/503 or not at all (a stall past the client's
read timeout), through ``FaultProxy`` in front of the real S3 test server: publishing a report
folder and reading an S3 dataset lose nothing and leave nothing half-written."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tasks.config import DatasetConfig
from tasks.data import load_dataset
from tasks.tracking.storage import MARKER, PublishError, publish_folder, read_marker
from tests.helpers import write_dataset
from tests.reliability.fault_proxy import FaultProxy, s3_request_key

READ_TIMEOUT_S = 1.0  # the proxy stalls longer than this


@pytest.fixture
def flaky_s3(s3_server, monkeypatch, tmp_path: Path):
    """Credentials in the environment and a factory of fault proxies whose endpoint becomes
    ``AWS_ENDPOINT_URL_S3``."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BIFOCAL_S3_READ_TIMEOUT", str(READ_TIMEOUT_S))
    monkeypatch.setenv("BIFOCAL_HOME", str(tmp_path / "home"))
    proxies: list[FaultProxy] = []

    def start(**kwargs) -> FaultProxy:
        kwargs.setdefault("stall_s", READ_TIMEOUT_S + 0.5)
        kwargs.setdefault("request_key", s3_request_key)  # same faults whatever the bucket
        proxy = FaultProxy(s3_server.endpoint, **kwargs).start()
        proxies.append(proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()


def report_folder(root: Path) -> dict[str, bytes]:
    """A report-like folder: small files, a nested one and one large enough for multipart."""
    files = {"report.json": json.dumps({"metrics": {"r1": 0.5}}).encode(),
             "per_sample.csv": b"id,rank\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(500)),
             "review_sample.csv": b"id,review_verdict\n1,\n",
             "report.html": b"<html>" + os.urandom(3000).hex().encode() + b"</html>",
             "tables/slices.parquet": os.urandom(20_000),
             "embeddings.npy": os.urandom(9 * 1024 * 1024)}  # > 8 MiB: multipart upload
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return files


def stored(s3_server, bucket: str, prefix: str) -> dict[str, bytes]:
    client = s3_server.client()
    listing = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
    return {o["Key"].removeprefix(f"{prefix}/"):
            client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def test_publish_through_30_percent_faults_is_complete_and_marked_last(s3_server, flaky_s3,
                                                                       tmp_path: Path):
    files = report_folder(tmp_path / "report")
    bucket = s3_server.new_bucket("reports")
    proxy = flaky_s3(error_rate=0.3, seed=3)

    uri = publish_folder(tmp_path / "report", f"s3://{bucket}/nightly/run-1")

    assert uri == f"s3://{bucket}/nightly/run-1"
    assert proxy.faults_injected >= 3  # the seed gives 500s, 503s and stalls
    assert {e.outcome for e in proxy.events} >= {"500", "503", "stall"}
    objects = stored(s3_server, bucket, "nightly/run-1")
    assert {k: v for k, v in objects.items() if k != MARKER} == files  # every byte arrived
    marker = read_marker(uri, s3_server.client())
    assert marker is not None and marker["complete"]
    assert {f["path"]: f["sha256"] for f in marker["files"]} == {
        path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    # the marker is written last: after every object the server stored (a retried marker
    # PUT, after a stall ate the answer, may follow the first one)
    writes = [e.path.split("?")[0] for e in proxy.forwarded() if e.method in {"PUT", "POST"}]
    first_marker = next(i for i, path in enumerate(writes) if path.endswith(f"/{MARKER}"))
    assert first_marker > 0 and all(p.endswith(f"/{MARKER}") for p in writes[first_marker:])

    # a rerun re-publishes idempotently: nothing changed, nothing re-uploaded, marker renewed
    proxy.events.clear()
    assert publish_folder(tmp_path / "report", uri + "/") == uri
    assert [e.path for e in proxy.forwarded("PUT") if not e.path.endswith(MARKER)] == []
    again = stored(s3_server, bucket, "nightly/run-1")
    assert again.keys() == objects.keys() and {k: v for k, v in again.items() if k != MARKER} \
        == files


def test_failed_publish_leaves_no_marker_and_a_rerun_completes_it(s3_server, flaky_s3,
                                                                  tmp_path: Path, monkeypatch):
    files = report_folder(tmp_path / "report")
    bucket = s3_server.new_bucket("reports")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")  # give up sooner than the default 6

    # S3 down: every request fails
    flaky_s3(error_rate=1.0, faults=("500", "503"))
    with pytest.raises(PublishError) as error:
        publish_folder(tmp_path / "report", f"s3://{bucket}/run-down")
    message = str(error.value)
    assert "after retries" in message and f"No {MARKER} marker was written" in message
    assert "rerun" in message and s3_server.secret_key not in message
    assert stored(s3_server, bucket, "run-down") == {}

    # S3 fails for one object after others were uploaded: no marker, so the folder is incomplete
    proxy = flaky_s3(error_rate=0.0, fail_when=lambda method, path: method == "PUT"
                     and path.endswith("/report.json"))
    with pytest.raises(PublishError, match="while uploading report.json"):
        publish_folder(tmp_path / "report", f"s3://{bucket}/run-half")
    half = stored(s3_server, bucket, "run-half")
    assert MARKER not in half and 0 < len(half) < len(files)
    assert read_marker(f"s3://{bucket}/run-half", s3_server.client()) is None

    # the rerun (30% faults again) uploads only what is missing and writes the marker
    proxy = flaky_s3(error_rate=0.3, seed=5)
    publish_folder(tmp_path / "report", f"s3://{bucket}/run-half")
    uploaded = {e.path.rsplit("/run-half/", 1)[-1].split("?")[0]
                for e in proxy.forwarded("PUT") if "/run-half/" in e.path}
    assert uploaded - {MARKER} == set(files) - set(half)
    objects = stored(s3_server, bucket, "run-half")
    assert {k: v for k, v in objects.items() if k != MARKER} == files
    assert read_marker(f"s3://{bucket}/run-half", s3_server.client())["complete"]


def test_s3_dataset_read_through_30_percent_faults_gives_the_same_items(s3_server, flaky_s3,
                                                                        tmp_path: Path,
                                                                        monkeypatch):
    local = write_dataset(tmp_path / "ds", n=16)
    with local.open("a") as handle:  # a reject must stay a reject, not become a loss
        handle.write(json.dumps({"id": "gone", "image": "images/nope.png",
                                 "captions": ["x"]}) + "\n")
    bucket = s3_server.new_bucket("data")
    client = s3_server.client()
    for file in sorted(p for p in (tmp_path / "ds").rglob("*") if p.is_file()):
        client.upload_file(str(file), bucket, f"bench/{file.relative_to(tmp_path / 'ds')}")
    config = DatasetConfig(source="s3", path=f"s3://{bucket}/bench/data.jsonl")

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    clean = load_dataset(config)
    monkeypatch.setenv("BIFOCAL_HOME", str(tmp_path / "home-flaky"))  # a cold cache
    proxy = flaky_s3(error_rate=0.3, seed=11)
    flaky = load_dataset(config)

    assert proxy.faults_injected >= 5
    assert len(clean.items) == 16
    assert flaky.items["item_id"].tolist() == clean.items["item_id"].tolist()
    assert flaky.items["captions"].tolist() == clean.items["captions"].tolist()
    assert flaky.digest == clean.digest  # image bytes included
    assert flaky.rejects["reason"].tolist() == clean.rejects["reason"].tolist() == [
        "image object not found"]
