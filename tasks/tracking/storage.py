"""Write report files to a local folder or an s3://bucket/prefix destination."""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.io import is_s3, s3_client, split_s3


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
