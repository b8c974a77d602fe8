"""Write report files to a local folder or an s3://bucket/prefix destination.

On S3 a folder is published so that readers can tell a complete one from a half-written one:
every object is written under its final key in one PUT (atomic per object), the objects are
checked by a listing, and only then is the completion marker ``_SUCCESS`` written, last, with
the file list and checksums. A re-publish first removes the old marker, so a folder is never
marked complete while it is being rewritten; a failed publish leaves no marker and raises
``PublishError``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.io.s3 import is_s3, s3_client, split_s3

MARKER = "_SUCCESS"
MARKER_FORMAT = "bifocal.publish/1"
class PublishError(RuntimeError):
    """Publishing a folder failed; the destination has no completion marker."""


@dataclass(frozen=True)
class LocalFile:
    path: Path
    relative: str
    size: int
    sha256: str
    md5: str


def _describe(local: Path) -> list[LocalFile]:
    files = []
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        relative = file.relative_to(local).as_posix()
        if relative == MARKER:
            continue  # the marker is written by the publish itself
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
                md5.update(chunk)
        files.append(LocalFile(file, relative, file.stat().st_size, sha.hexdigest(),
                               md5.hexdigest()))
    return files


def _key(prefix: str, relative: str) -> str:
    return "/".join(filter(None, [prefix, relative]))


def _listing(client: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """Key -> {size, etag} of every object under ``prefix/``."""
    found: dict[str, dict[str, Any]] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = {"size": obj["Size"], "etag": obj.get("ETag", "").strip('"')}
    return found


def _same(stored: dict[str, Any] | None, file: LocalFile) -> bool:
    """Stored object has the file's size and, for a single-part upload, its MD5 (the ETag)."""
    if stored is None or stored["size"] != file.size:
        return False
    etag = stored["etag"]
    return "-" in etag or etag == file.md5  # a multipart ETag is not an MD5: size only


def publish_s3(local: Path, destination: str, client: Any = None) -> str:
    """Upload ``local``'s files under the destination prefix, then write ``_SUCCESS`` last."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(destination)
    uri = destination.rstrip("/")
    client = client or s3_client()
    files = _describe(local)
    marker_key = _key(prefix, MARKER)
    step = f"removing the old {MARKER} marker"
    try:
        client.delete_object(Bucket=bucket, Key=marker_key)  # incomplete until re-marked
        step = "listing the destination"
        stored = _listing(client, bucket, prefix)
        for file in files:
            key = _key(prefix, file.relative)
            if _same(stored.get(key), file):
                continue  # a rerun: this object is already there, byte for byte
            step = f"uploading {file.relative}"
            client.upload_file(str(file.path), bucket, key)
        step = "checking the uploaded objects"
        stored = _listing(client, bucket, prefix)
        wrong = [f.relative for f in files if not _same(stored.get(_key(prefix, f.relative)), f)]
        if wrong:
            raise PublishError(f"publishing {local} to {uri} failed: objects missing or with "
                               f"the wrong size/checksum after upload: {', '.join(wrong)}; no "
                               f"{MARKER} marker was written, rerun to publish again")
        step = f"writing the {MARKER} marker"
        marker = {"format": MARKER_FORMAT, "complete": True,
                  "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "files": [{"path": f.relative, "size": f.size, "sha256": f.sha256,
                             "md5": f.md5} for f in files]}
        client.put_object(Bucket=bucket, Key=marker_key, ContentType="application/json",
                          Body=json.dumps(marker, indent=1).encode())
    except (BotoCoreError, ClientError, S3UploadFailedError) as error:
        raise PublishError(
            f"publishing {local} to {uri} failed while {step}, after retries: "
            f"{type(error).__name__}: {error}. No {MARKER} marker was written, so the folder "
            "counts as incomplete; rerun to publish it again (objects already uploaded are "
            "kept and skipped)") from None
    return uri


def read_marker(destination: str, client: Any = None) -> dict[str, Any] | None:
    """The ``_SUCCESS`` document of a published folder (local or S3); None while the folder is
    incomplete (never published, being re-published, or a publish failed)."""
    if not is_s3(destination):
        path = Path(destination) / MARKER
        return json.loads(path.read_text()) if path.is_file() else None
    from botocore.exceptions import ClientError

    bucket, prefix = split_s3(destination)
    try:
        body = (client or s3_client()).get_object(Bucket=bucket, Key=_key(prefix, MARKER))
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey"}:
            return None
        raise
    return json.loads(body["Body"].read())


def publish_folder(local: Path, destination: str) -> str:
    """Copy the files of ``local`` to ``destination`` (folder or s3:// URI); return its URI.
    On S3 the folder is complete when its ``_SUCCESS`` marker exists (see the module doc)."""
    if is_s3(destination):
        return publish_s3(local, destination)
    target = Path(destination).expanduser().resolve()
    if target != local.resolve():
        shutil.copytree(local, target, dirs_exist_ok=True)
    return str(target)


def presigned_links(uri: str, names: list[str], expires_s: int) -> dict[str, str]:
    """For a folder published to ``s3://bucket/prefix``: name -> a presigned GET URL of each
    of ``names`` (relative paths) valid ``expires_s`` seconds; empty for a local folder."""
    if not is_s3(uri):
        return {}
    bucket, prefix = split_s3(uri)
    client = s3_client()
    return {name: str(client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": _key(prefix, name)}, ExpiresIn=expires_s))
        for name in names}
