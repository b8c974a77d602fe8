from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tasks.io import split_s3
from tasks.tracking.storage import publish_folder


def make_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "report.json").write_text('{"a": 1}')
    (root / "sub" / "x.csv").write_text("a,b\n1,2\n")
    return root


def test_publish_to_local_folder(tmp_path: Path):
    source = make_folder(tmp_path / "src")
    target = publish_folder(source, str(tmp_path / "out" / "run-1"))
    assert (Path(target) / "sub" / "x.csv").read_text() == "a,b\n1,2\n"


def test_publish_to_s3_and_wrong_credentials(tmp_path: Path, s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.new_bucket("reports")
    source = make_folder(tmp_path / "src")
    uri = publish_folder(source, f"s3://{bucket}/team/run-1/")
    assert uri == f"s3://{bucket}/team/run-1"
    body = s3_server.client().get_object(Bucket=bucket, Key="team/run-1/sub/x.csv")["Body"]
    assert body.read() == b"a,b\n1,2\n"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(Exception) as error:  # noqa: B017 - boto3 wraps it in S3UploadFailedError
        publish_folder(source, f"s3://{bucket}/team/run-2")
    assert "SignatureDoesNotMatch" in str(error.value) or isinstance(error.value, ClientError)


def test_split_s3():
    assert split_s3("s3://bucket/a/b/") == ("bucket", "a/b")
    with pytest.raises(ValueError):
        split_s3("s3:///nobucket")
