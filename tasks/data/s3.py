"""S3 source: ``dataset.path = s3://bucket/prefix/manifest.jsonl`` (JSONL/CSV/TSV/parquet, read
like a local manifest), image paths relative to the manifest's prefix or to ``dataset.root``
(another ``s3://`` prefix).

Objects are fetched through boto3 (credentials from the standard AWS variables or profile; an
S3-compatible server through ``AWS_ENDPOINT_URL_S3``) into a content-addressed cache under
``$BIFOCAL_HOME/cache/s3`` (default ``.bifocal/cache/s3``), keyed by bucket/key + ETag + size.
Every object gets a HEAD request; only a new or changed one is downloaded. The images are then
hard-linked into a mirror folder that keeps the key layout, named by the exact object versions it
holds, so ``normalize`` applies the usual path and image checks and a later change of an object
never alters the files of an earlier load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import DatasetConfig
from tasks.data.base import DataError, RawTable, _item_id, _reject, register_source
from tasks.data.manifest import read_manifest, select_split
from tasks.io import (
    s3_client,  # retries with backoff, timeouts
    split_s3,
)

logger = logging.getLogger(__name__)

WORKERS = 8
NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
DENIED = {"403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken",
          "ExpiredToken", "InvalidSecurity"}


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class Fetched:
    """A local copy of an object (``path``), or why there is none (``reason``)."""

    path: Path | None = None
    reason: str | None = None
    downloaded: bool = False


def cache_dir() -> Path:
    home = Path(os.environ.get("BIFOCAL_HOME", Path.cwd() / ".bifocal"))
    return home / "cache" / "s3"


def parse_uri(uri: str, what: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise DataError(f"{what} must be an s3://bucket/key URI for the s3 source (got {uri!r})")
    try:
        return split_s3(uri)
    except ValueError as error:
        raise DataError(str(error)) from None


def error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def access_error(error: Exception, uri: str) -> DataError:
    """A DataError for a failed request; never includes credentials (botocore omits them)."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    code = error_code(error)
    if code in DENIED:
        return DataError(
            f"access to {uri} was denied ({code}: wrong credentials, e.g. a signature mismatch "
            "from a wrong secret key, or no permission); check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY / AWS_PROFILE and AWS_ENDPOINT_URL_S3"
        )
    if isinstance(error, NoCredentialsError):
        return DataError(f"no AWS credentials found for {uri}: set AWS_ACCESS_KEY_ID / "
                         "AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
    if isinstance(error, EndpointConnectionError):
        return DataError(f"cannot reach the S3 endpoint for {uri}: {error}")
    return DataError(f"S3 request for {uri} failed: {code or type(error).__name__}: {error}")


def cached_path(cache: Path, obj: S3Object, etag: str, size: int) -> Path:
    name = hashlib.sha256(f"{obj.bucket}/{obj.key}\n{etag}\n{size}".encode()).hexdigest()
    return cache / "objects" / name[:2] / name


def download(client: Any, obj: S3Object, cache: Path) -> Path:
    response = client.get_object(Bucket=obj.bucket, Key=obj.key)
    target = cached_path(cache, obj, response["ETag"], response["ContentLength"])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}-{threading.get_ident()}")
    with tmp.open("wb") as handle:
        for chunk in response["Body"].iter_chunks(1 << 20):
            handle.write(chunk)
    os.replace(tmp, target)
    return target


def fetch(client: Any, obj: S3Object, cache: Path) -> Fetched:
    """The cached copy of ``obj``, downloaded only when its ETag/size is not cached yet."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        head = client.head_object(Bucket=obj.bucket, Key=obj.key)
        target = cached_path(cache, obj, head["ETag"], head["ContentLength"])
        if target.is_file() and target.stat().st_size == head["ContentLength"]:
            return Fetched(path=target)
        return Fetched(path=download(client, obj, cache), downloaded=True)
    except ClientError as error:
        if error_code(error) in NOT_FOUND:
            return Fetched(reason="not found")
        raise access_error(error, obj.uri) from None
    except BotoCoreError as error:
        raise access_error(error, obj.uri) from None


def image_key(prefix: str, relative: Any) -> str | None:
    """The key of an image path under ``prefix``; None for a path that is empty, absolute or
    escapes the prefix (``normalize`` rejects those rows with the local-path rule)."""
    if not isinstance(relative, str) or not relative.strip():
        return None
    normal = posixpath.normpath(relative)
    if posixpath.isabs(normal) or normal == "." or normal.split("/")[0] == "..":
        return None
    return f"{prefix}/{normal}" if prefix else normal


def limit_rows(rows: pd.DataFrame, image_col: str, limit: int | None) -> pd.DataFrame:
    """The rows of the first ``limit`` images (rows of one image are grouped into one item)."""
    if limit is None:
        return rows
    return rows[rows[image_col].isin(rows[image_col].drop_duplicates().iloc[:limit])]


def link_mirror(files: dict[str, Path], cache: Path) -> Path:
    """A folder with the key layout, hard-linked to the cached objects; named by its content."""
    digest = hashlib.sha256("\n".join(f"{k}\t{p.name}" for k, p in sorted(files.items())).encode())
    root = cache / "mirror" / digest.hexdigest()[:24]
    for relative, source in files.items():
        target = root / relative
        if target.exists():
            continue  # same name, same content: the folder name pins every object's version
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        try:
            os.link(source, tmp)
        except OSError:  # no hard links on this file system
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    root.mkdir(parents=True, exist_ok=True)
    return root


def fetch_images(client: Any, bucket: str, keys: dict[str, str], cache: Path
                 ) -> dict[str, Fetched]:
    """Relative path -> fetched object, in a small thread pool."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = pool.map(lambda key: fetch(client, S3Object(bucket, key), cache), keys.values())
        return dict(zip(keys, results, strict=True))


def reject_missing(rows: pd.DataFrame, config: DatasetConfig, missing: dict[str, str]
                   ) -> tuple[pd.DataFrame, list[dict]]:
    """Drop the rows of images that could not be fetched; one reject per image, standing for
    all of that image's rows (``rows``)."""
    image_col = config.columns.image
    gone = rows[image_col].isin(list(missing))
    firsts = rows[gone].drop_duplicates(image_col)
    sizes = rows[gone].groupby(image_col, sort=False).size()
    rejects = [_reject(row, _item_id(record, config.columns.id, row), "item",
                       f"image object {missing[record[image_col]]}",
                       rows=int(sizes[record[image_col]]))
               for row, record in firsts.iterrows()]
    return rows[~gone], rejects


@register_source("s3")
def load_s3(config: DatasetConfig) -> RawTable:
    bucket, key = parse_uri(config.path, "dataset.path")
    manifest = S3Object(bucket, key)
    image_bucket, prefix = (parse_uri(config.root, "dataset.root") if config.root
                            else (bucket, posixpath.dirname(key)))
    cache, client = cache_dir(), s3_client()
    fetched = fetch(client, manifest, cache)
    if fetched.path is None:
        raise DataError(f"manifest object not found: {manifest.uri}")
    rows, rejects = read_manifest(fetched.path, name=manifest.uri)
    rows = select_split(rows, config.split)
    image_col = config.columns.image
    if image_col not in rows.columns:  # normalize names the missing column
        return RawTable(rows=rows, root=cache, source_uri=manifest.uri, rejects=rejects)
    rows = limit_rows(rows, image_col, config.limit)
    # non-string image values are rejected by normalize; they name no object
    keys = {rel: k for rel in dict.fromkeys(v for v in rows[image_col] if isinstance(v, str))
            if (k := image_key(prefix, rel)) is not None}
    images = fetch_images(client, image_bucket, keys, cache)
    logger.info("s3: %d of %d image objects downloaded, the rest from the cache",
                sum(f.downloaded for f in images.values()), len(images))
    missing = {rel: f.reason or "not fetched" for rel, f in images.items() if f.path is None}
    rows, lost = reject_missing(rows, config, missing)
    files = {posixpath.normpath(rel): f.path for rel, f in images.items() if f.path is not None}
    return RawTable(rows=rows, root=link_mirror(files, cache), source_uri=manifest.uri,
                    rejects=rejects + lost)
