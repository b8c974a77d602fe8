"""Shared I/O, a leaf every stage imports: image decoding with its failure capture, parquet
writing and the S3 client. It imports nothing from the project.

Image decoding shapes model inputs, so this module is part of the inference fingerprint's code
version (``tasks/tracking/fingerprint.py``); keep row normalisation and report code elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from PIL.Image import Image

DECODE_ERRORS = (OSError, ValueError, SyntaxError)


def open_image(path: str | Path) -> Image:
    """Decode an image the way every stage sees it: EXIF-transposed RGB."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def decode_images(
    paths: Sequence[str], load: Callable[[str], Any] | None = None
) -> tuple[list[Any], list[int], dict[int, str]]:
    """Decode each image (default: ``open_image``); a failure is recorded with its reason by
    position, never raised. Returns (images, positions decoded, failures)."""
    load = load or open_image
    images, kept, failures = [], [], {}
    for index, path in enumerate(paths):
        try:
            images.append(load(path))
        except DECODE_ERRORS as error:
            failures[index] = f"image decode failed: {error}"
            continue
        kept.append(index)
    return images, kept, failures


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Parquet, with mixed-type metadata columns stored as text rather than failing."""
    import pyarrow as pa

    try:
        frame.to_parquet(path, index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        fixed = frame.copy()
        for column in fixed.columns:
            if fixed[column].dtype == object and column != "captions":
                fixed[column] = fixed[column].map(lambda v: None if v is None else str(v))
        fixed.to_parquet(path, index=False)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"invalid S3 URI {uri!r}")
    return bucket, prefix.strip("/")


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    # A fresh session reads the current credentials (boto3's default session caches them).
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
