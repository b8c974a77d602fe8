"""Shared I/O, a leaf every stage imports; it imports nothing from the project.

- ``images``: safe file reads (regular files only, byte and pixel limits) and image decoding
  with its failure capture — part of the inference cache key;
- ``refusals``: one wording for a file that could not be read;
- ``tables``: parquet writing;
- ``s3``: S3 URIs and the retrying S3 client (data sources and report publishing).
"""

from tasks.io.images import (
    BACKGROUND,
    DECODE_ERRORS,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_MANIFEST_BYTES,
    FileRefused,
    ImageError,
    decode_image_bytes,
    decode_images,
    error_text,
    open_image,
    open_regular_file,
    read_image_file,
    read_regular_file,
    to_rgb,
    verify_image,
)
from tasks.io.s3 import is_s3, s3_client, s3_config, split_s3
from tasks.io.tables import write_parquet

__all__ = [
    "BACKGROUND", "DECODE_ERRORS", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "MAX_MANIFEST_BYTES",
    "FileRefused", "ImageError", "decode_image_bytes", "decode_images", "error_text",
    "is_s3", "open_image", "open_regular_file", "read_image_file", "read_regular_file",
    "s3_client", "s3_config", "split_s3", "to_rgb", "verify_image", "write_parquet",
]
