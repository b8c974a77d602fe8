"""S3 URIs and the S3 client that survives a flaky endpoint (retries with backoff on 5xx,
throttling, connection errors and timeouts; timeouts so no request hangs)."""

from __future__ import annotations

import os
from typing import Any

# Defaults; override with AWS_RETRY_MODE / AWS_MAX_ATTEMPTS (botocore's own variables) and
# BIFOCAL_S3_CONNECT_TIMEOUT / BIFOCAL_S3_READ_TIMEOUT (seconds).
S3_MAX_ATTEMPTS = 6  # total, the first try included: ~15 s of backoff at most before giving up
S3_CONNECT_TIMEOUT = 5.0
S3_READ_TIMEOUT = 30.0


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"invalid S3 URI {uri!r}")
    return bucket, prefix.strip("/")


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number (got {value!r})") from None


def s3_config() -> Any:
    """botocore settings: retries with exponential backoff and jitter on 5xx, throttling,
    connection errors and timeouts ("standard" mode), and timeouts so no request hangs."""
    from botocore.config import Config

    return Config(
        s3={"addressing_style": "path"},
        retries={"mode": os.environ.get("AWS_RETRY_MODE") or "standard",
                 "total_max_attempts": int(_env_number("AWS_MAX_ATTEMPTS", S3_MAX_ATTEMPTS))},
        connect_timeout=_env_number("BIFOCAL_S3_CONNECT_TIMEOUT", S3_CONNECT_TIMEOUT),
        read_timeout=_env_number("BIFOCAL_S3_READ_TIMEOUT", S3_READ_TIMEOUT),
    )


def s3_client() -> Any:
    """A boto3 S3 client with ``s3_config()``; endpoint from AWS_ENDPOINT_URL_S3 (S3-compatible
    servers) or AWS_ENDPOINT_URL, credentials from the standard AWS variables or profile."""
    import boto3

    # A fresh session reads the current credentials (boto3's default session caches them).
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        config=s3_config(),
    )
