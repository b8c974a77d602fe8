"""Write report files to a local folder or an s3://bucket/prefix destination."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"invalid S3 URI {uri!r}")
    return bucket, prefix.strip("/")


def s3_client():
    import boto3
    from botocore.config import Config

    # A fresh session reads the current credentials (boto3's default session caches them).
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def publish_folder(local: Path, destination: str) -> str:
    """Copy the files of ``local`` to ``destination`` (folder or s3:// URI); return its URI."""
    if is_s3(destination):
        bucket, prefix = split_s3(destination)
        client = s3_client()
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            key = "/".join(filter(None, [prefix, file.relative_to(local).as_posix()]))
            client.upload_file(str(file), bucket, key)
        return destination.rstrip("/")
    target = Path(destination).expanduser().resolve()
    if target != local.resolve():
        shutil.copytree(local, target, dirs_exist_ok=True)
    return str(target)
